"""The recorded sessions the surface lists and hands out as ``.mid`` and piano-roll PNG.

A session is a journal ``NAME.mid.journal`` in the recordings folder (the folder of ``--record``, else
the current one): every ``lofi-live run --record`` leaves one. A finished session's ``NAME.mid`` is
served as it is; the session being recorded now, or one that never finished, is exported from its
journal (``lofi-live export --recover``). PNGs are drawn by ``lofi-live plot``. Both run in a child
process at a lower priority, one at a time, so neither the parsing nor matplotlib ever competes with
the engine for this process's GIL; results are kept per journal size and time.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Seconds a conversion may take before it is given up.
CONVERT_SECONDS = 60.0
JOURNAL = ".mid.journal"


class Recordings:
    def __init__(self, folder: Path, current: Path | None = None) -> None:
        self.folder = folder
        self.current = current.resolve() if current is not None else None
        self._work = tempfile.TemporaryDirectory(prefix="lofi-live-web-")
        self._made: dict[tuple[str, str], tuple[tuple[int, int], Path]] = {}
        self._lock = asyncio.Lock()

    def close(self) -> None:
        self._work.cleanup()

    def _journals(self) -> dict[str, Path]:
        try:
            found = [path for path in self.folder.iterdir() if path.name.endswith(JOURNAL) and path.is_file()]
        except OSError:
            return {}
        return {path.name[: -len(JOURNAL)]: path for path in found if path.name != JOURNAL}

    def live(self, name: str) -> bool:
        return self.current is not None and (self.folder / f"{name}.mid").resolve() == self.current

    def listing(self) -> list[dict[str, Any]]:
        """Each session, newest first: its name, size, time, and whether it is being recorded now."""
        rows = []
        for name, journal in self._journals().items():
            try:
                stat = journal.stat()
            except OSError:
                continue
            mid = self.folder / f"{name}.mid"
            rows.append({"name": name, "modified": stat.st_mtime, "journal_bytes": stat.st_size,
                         "recording": self.live(name), "finished": mid.is_file() and not self.live(name)})
        return sorted(rows, key=lambda row: -row["modified"])

    async def file(self, name: str, kind: str) -> Path | None:
        """The ``.mid`` (``kind`` "mid") or ``.png`` of session ``name``; None when there is no such session."""
        journal = self._journals().get(name)
        if journal is None:
            return None
        mid = self.folder / f"{name}.mid"
        if kind == "mid" and mid.is_file() and not self.live(name):
            return mid
        stat = journal.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        made = self._made.get((name, kind))
        if made is not None and made[0] == stamp and made[1].is_file():
            return made[1]
        async with self._lock:  # one conversion at a time
            source = mid if mid.is_file() and not self.live(name) else await self._export(name, journal)
            target = source if kind == "mid" else await self._plot(name, source)
        self._made[(name, kind)] = (stamp, target)
        return target

    async def _export(self, name: str, journal: Path) -> Path:
        target = Path(self._work.name) / f"{name}.mid"
        await _lofi_live("export", "--recover", str(journal), "-o", str(target))
        return target

    async def _plot(self, name: str, source: Path) -> Path:
        target = Path(self._work.name) / f"{name}.png"
        await _lofi_live("plot", str(source), "-o", str(target), "--title", name)
        return target


class ConversionFailed(RuntimeError):
    """A child ``lofi-live`` failed: its one-line error."""


async def _lofi_live(*args: str) -> None:
    command = [sys.executable, "-m", "lofi_live.cli", *args]
    if shutil.which("nice"):
        command = ["nice", "-n", "10", *command]
    try:
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=CONVERT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ConversionFailed(f"lofi-live {args[0]} took over {CONVERT_SECONDS:g} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ConversionFailed(lines[-1] if lines else f"lofi-live {args[0]} failed ({done.returncode})")
