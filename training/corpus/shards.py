"""Writing a corpus as a folder of shards (``prepare --shard-files``), never held whole in memory.

* ``index.json``: the corpus header (format, source, tokens, rules), ``shard_files``, one entry per shard
  (name, files, tokens) and every failure;
* ``shard-00000.jsonl.gz``, ...: gzip JSON lines, one ``{"path", "sha256", "tokens"}`` per tokenized file.
  Shard ``k`` holds the tokenized files among the ``k``-th ``shard_files`` files of the sorted file list,
  so a local and a Dask run give byte-identical shards.

Reading them back is :mod:`training.corpus.io`.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from lofi_live.errors import LofiError
from training.corpus.io import INDEX, shard_name
from training.corpus.parse import FileResult

def _open_output(folder: Path) -> None:
    """Make the shard folder; an existing one is reused only if it holds a shard corpus (it is replaced)."""
    if folder.exists() and not folder.is_dir():
        raise LofiError(f"{folder}: exists and is not a folder (--shard-files writes a folder)")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / INDEX).exists():
        raise LofiError(f"{folder}: folder exists and is not a shard corpus (no {INDEX}): choose another -o")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LofiError(f"{folder}: cannot make the folder ({error.strerror or error})") from None


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        raise LofiError(f"{path}: cannot write ({error.strerror or error})") from None


def write_shards(
    results: Iterable[FileResult], names: Sequence[str], folder: Path, shard_files: int, header: dict[str, Any]
) -> dict[str, Any]:
    """Write results (in any order) as shards of ``shard_files`` consecutive ``names``, then the index.

    A shard is written as soon as its last file's result arrives, so only unfinished shards are in memory.
    ``index.json`` is written last: a folder with an index is a complete corpus. Returns the index,
    with ``cached_files`` (not stored) for the summary line.
    """
    _open_output(folder)
    position = {name: index for index, name in enumerate(names)}
    count = -(-len(names) // shard_files)
    expected = [min(shard_files, len(names) - k * shard_files) for k in range(count)]
    pending: dict[int, list[FileResult]] = {}
    shards: list[dict[str, Any]] = [{} for _ in range(count)]
    failures: list[dict[str, str]] = []
    cached = 0
    for result in results:
        cached += result.cached
        if not result.tokens:
            failures.append({"path": result.path, "reason": str(result.reason)})
        number = position[result.path] // shard_files
        pending.setdefault(number, []).append(result)
        if len(pending[number]) == expected[number]:
            done = sorted((r for r in pending.pop(number) if r.tokens), key=lambda r: r.path)
            lines = "".join(json.dumps(r.entry(), separators=(",", ":")) + "\n" for r in done)
            _write_atomic(folder / shard_name(number), gzip.compress(lines.encode(), mtime=0))
            shards[number] = {"name": shard_name(number), "files": len(done),
                              "tokens": sum(len(r.tokens or []) for r in done)}
    index = {**header, "layout": "shards", "shard_files": shard_files, "shards": shards,
             "failures": sorted(failures, key=lambda f: f["path"])}
    _write_atomic(folder / INDEX, json.dumps(index, indent=1).encode())
    kept = {shard["name"] for shard in shards}
    for stale in folder.glob("shard-*.jsonl.gz"):
        if stale.name not in kept:
            stale.unlink()
    return {**index, "cached_files": cached}
