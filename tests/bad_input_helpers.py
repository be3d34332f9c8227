"""Shared by the bad-input tests: bad MIDI files made on demand, the console scripts, and the one-line check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lofi_live.midi.files import MAX_MIDI_BYTES
from lofi_live.recording.journal import MAX_JOURNAL_BYTES
from midi_factory import random_song, write_onsets

BIN = Path(sys.executable).parent
LOFI_LIVE = str(BIN / "lofi-live")
LOFI_TRAIN = str(BIN / "lofi-train")
#: A 0-track Standard MIDI File: a complete MThd chunk, nothing after it.
ZERO_TRACK_MIDI = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + (0).to_bytes(2, "big") + (480).to_bytes(2, "big")

#: The bad-file cases: name -> (what the line must say, as lower-case alternatives).
MIDI_CASES = {
    "corrupt": ("corrupt",),
    "truncated": ("truncated", "corrupt"),
    "empty": ("empty",),
    "huge": ("too large",),
    "zero_tracks": ("no tracks",),
    "not_midi": ("not a midi file",),
    "missing": ("no such file",),
    "folder": ("folder",),
    "fifo": ("not a regular file",),
}


def good_midi(path: Path, seed: int = 1, length: int = 80) -> Path:
    return write_onsets(path, random_song(seed, length))


def make_case(folder: Path, case: str, name: str | None = None) -> Path:
    """One bad input named ``<case>.mid`` (or ``name``) in ``folder``."""
    path = folder / (name or f"{case}.mid")
    if case == "corrupt":
        good = good_midi(folder / "_good_for_corrupt.mid").read_bytes()
        (folder / "_good_for_corrupt.mid").unlink()
        # a real header, then the track chunk's bytes scrambled and its length field claiming far more
        body = bytearray(good)
        track = body.index(b"MTrk")
        body[track + 4 : track + 8] = (10**6).to_bytes(4, "big")
        body[track + 8 :] = bytes((i * 37 + 11) % 256 for i in range(len(body) - track - 8))
        path.write_bytes(bytes(body))
    elif case == "truncated":
        good = good_midi(folder / "_good_for_truncated.mid").read_bytes()
        (folder / "_good_for_truncated.mid").unlink()
        path.write_bytes(good[: len(good) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "huge":
        with path.open("wb") as handle:
            handle.write(ZERO_TRACK_MIDI)
        # sparse: takes no disk space; over both the MIDI and the journal size limits
        os.truncate(path, max(MAX_MIDI_BYTES, MAX_JOURNAL_BYTES) + 1)
    elif case == "zero_tracks":
        path.write_bytes(ZERO_TRACK_MIDI)
    elif case == "not_midi":
        path.write_text("this is a text file with a .mid name\n" * 20)
    elif case == "missing":
        pass
    elif case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)  # reading it would block for ever: must be refused before opening
    else:  # pragma: no cover - a typo in a parametrization
        raise AssertionError(case)
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", LOFI_LIVE_CACHE=str(Path(os.environ.get("TMPDIR", "/tmp")) / "lofi-bad-input-cache"))
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess, names: Path | str, reasons: tuple[str, ...] = ()) -> str:
    """Exit code 2, no traceback, exactly one stderr line naming ``names`` and giving one of ``reasons``."""
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    lines = err.splitlines()
    assert result.returncode == 2, f"rc {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert str(names) in line, f"{names} not named in: {line}"
    if reasons:
        assert any(reason in line.lower() for reason in reasons), f"none of {reasons} in: {line}"
    return line
