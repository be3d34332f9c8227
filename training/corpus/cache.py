"""``prepare``'s per-file token cache: one JSON entry per file hash and tokenization (docs/CORPUS_FORMAT.md, "Cache").

Split from :mod:`training.corpus.prepare`, which re-exports these names. An entry records the rules, the track
filter and the parser's version it was made with, and grid entries the bar positions; any mismatch is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from lofi_live.tokens import grid as grid_tokens

#: Names each tokenization; part of every cache entry (with the parser's version), so changing either
#: invalidates the cache.
SEED_RULES = (
    "music21 seed rules v1: instrument.partitionByInstrument(midi).parts[0].recurse() when it finds parts, "
    "else midi.flatten().notes; Note -> str(pitch); Chord -> '.'.join(normalOrder)"
)
RULES = {"seed": SEED_RULES, "grid": grid_tokens.RULES}


def _cache_file(cache_dir: Path, sha256: str, kind: str, tracks: str | None = None) -> Path:
    """The entry of one file under one tokenization (and track filter): seed entries keep their old names."""
    suffix = "" if kind == "seed" else f"-{kind}" + (f"-{hashlib.sha256(tracks.encode()).hexdigest()[:12]}" if tracks else "")
    return cache_dir / sha256[:2] / f"{sha256}{suffix}.json"


@lru_cache(maxsize=2)
def _cache_stamp(tokens: str, tracks: str | None = None) -> dict[str, str]:
    """What a cache entry must match besides the file hash: the rules, the track filter and the parser's version."""
    parser = "music21" if tokens == "seed" else "mido"
    try:
        version = metadata.version(parser)
    except metadata.PackageNotFoundError:
        version = "absent"
    stamp = {"rules": RULES[tokens], parser: version}
    if tracks is not None:
        stamp["tracks"] = tracks
    return stamp


def _read_cache(
    cache_dir: Path | None, sha256: str, tokens: str, tracks: str | None = None
) -> tuple[list[str], list[int] | None] | None:
    """Cached (tokens, positions) for a file hash, or None when absent, unreadable or made with other rules.

    A grid entry without positions (written before they were recorded) is a miss."""
    if cache_dir is None:
        return None
    try:
        entry = json.loads(_cache_file(cache_dir, sha256, tokens, tracks).read_text())
    except (OSError, ValueError):
        return None
    stamp = _cache_stamp(tokens, tracks)
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in stamp.items()):
        return None
    if not isinstance(entry.get("tokens"), list):
        return None
    positions = entry.get("positions")
    if tokens == "grid" and (not isinstance(positions, list) or len(positions) != len(entry["tokens"])):
        return None
    return [str(t) for t in entry["tokens"]], ([int(p) for p in positions] if tokens == "grid" else None)


def _write_cache(cache_dir: Path | None, sha256: str, kind: str, tokens: list[str], tracks: str | None = None,
                 positions: list[int] | None = None) -> None:
    """Store tokens (and grid positions) atomically; a cache that cannot be written only costs speed, never the run."""
    if cache_dir is None:
        return
    target = _cache_file(cache_dir, sha256, kind, tracks)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        extra = {} if positions is None else {"positions": positions}
        temporary.write_text(json.dumps({**_cache_stamp(kind, tracks), "tokens": tokens, **extra}))
        os.replace(temporary, target)
    except OSError:
        pass
