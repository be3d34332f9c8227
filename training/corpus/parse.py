"""Parsing MIDI files into tokens for a corpus: finding the files, the token cache, parallel parses.

Two tokenizations (``--tokens``): ``grid``, one token per 0.5-beat step with ``hold`` and ``rest``
(:mod:`lofi_live.tokens.grid`, mido only, fast), and ``seed``, music21 with the seed article's exact
rules, so a model trained on it sees the tokens the seed saw. music21 is slow (about a second a file),
so files are parsed in a process pool, each under a time limit, and each result is cached by the
SHA-256 of the file's bytes and the tokenization: a rerun only parses what changed. A file that fails
gets its reason and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lofi_live.errors import LofiError
from lofi_live.midi.files import check_midi_path, read_midi
from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens.midi import seed_rule_tokens
from training.corpus.io import RULES

MIDI_SUFFIXES = (".mid", ".midi")
DEFAULT_TIMEOUT_S = 120.0
#: Failure reason of a file that parses but gives no tokens, by tokenization.
NO_NOTES = {
    "seed": "no notes or chords in what the seed rules read (first instrument part, else all notes)",
    "grid": "no notes outside the drum channel",
}


@dataclass(frozen=True)
class FileResult:
    """What parsing one file gave: its tokens, or the reason it failed."""

    path: str
    sha256: str
    tokens: list[str] | None
    reason: str | None = None
    cached: bool = False
    #: grid tokens only: each token's position in its 4/4 bar (0-7, from the file's beat grid)
    positions: list[int] | None = None

    def entry(self) -> dict[str, Any]:
        """The file's corpus entry: path, hash, tokens and (grid) positions."""
        found: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "tokens": self.tokens}
        if self.positions is not None:
            found["positions"] = self.positions
        return found


class ParseTimeout(Exception):
    """Raised inside a worker by SIGALRM when a file takes longer than the time limit."""


def default_cache_dir() -> Path:
    """``$LOFI_LIVE_CACHE`` when set, else ``~/.cache/lofi-live/tokens``."""
    override = os.environ.get("LOFI_LIVE_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "lofi-live" / "tokens"


def find_midi_files(folder: Path) -> list[Path]:
    """Every ``*.mid``/``*.midi`` below ``folder`` (any case), sorted by relative path."""
    if not folder.exists():
        raise LofiError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise LofiError(f"{folder}: not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise LofiError(f"{folder}: folder cannot be read (permission denied)")
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise LofiError(f"{folder}: no .mid or .midi files found")
    return files


def select_files(folder: Path, sample: int | None, seed: int) -> list[Path]:
    """The MIDI files below ``folder`` (``sample`` of them drawn with ``seed``), sorted by relative path."""
    files = find_midi_files(folder)
    if sample is not None and sample < len(files):
        files = sorted(random.Random(seed).sample(files, sample), key=lambda p: p.relative_to(folder).as_posix())
    return files


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


def write_cache(cache_dir: Path | None, sha256: str, kind: str, tokens: list[str], tracks: str | None = None,
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


def _on_alarm(signum: int, frame: Any) -> None:
    raise ParseTimeout


def hash_and_lookup(
    path: str, relpath: str, cache_dir: Path | None, kind: str = "seed", tracks: str | None = None
) -> FileResult:
    """Check and hash one file and look it up in the cache; ``tokens`` is None on a miss.

    Runs in the main process: a warm run never starts a parser process or imports music21.
    """
    try:
        check_midi_path(path)
        data = Path(path).read_bytes()
    except LofiError as error:
        return FileResult(relpath, "", None, _reason(error, path))
    except OSError as error:
        return FileResult(relpath, "", None, f"cannot be read ({error.strerror or error})")
    sha256 = hashlib.sha256(data).hexdigest()
    cached = _read_cache(cache_dir, sha256, kind, tracks)
    if cached is None:
        return FileResult(relpath, sha256, None)
    tokens, positions = cached
    return FileResult(relpath, sha256, tokens, None if tokens else no_tokens_reason(path, kind), cached=True,
                      positions=positions)


def parse_file(
    path: str, relpath: str, sha256: str, timeout_s: float, cache_dir: str | None, kind: str = "seed",
    tracks: str | None = None,
) -> FileResult:
    """Tokenize one file (``kind``: seed or grid) under a SIGALRM time limit; every failure becomes a reason.

    Runs in a worker process (or the main thread with one worker). The file is first read with mido
    (:func:`lofi_live.midi.files.read_midi`), so a truncated, corrupt or zero-track file fails with the
    same reason as in every other command (music21 reads a truncated file as far as it goes, and some
    broken ones as empty). A file that parses but holds no notes is cached too (as no tokens), so a
    rerun skips it.
    """
    try:
        # the same checks as every other command (truncated, zero-track, type 2...): music21 itself reads
        # a truncated file as far as it goes without a word
        read_midi(path)
    except LofiError as error:
        return FileResult(relpath, sha256, None, _reason(error, path))
    timed = threading.current_thread() is threading.main_thread()  # signals only reach the main thread
    if timed:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        positions: list[int] | None = None
        if kind == "seed":
            tokens = seed_rule_tokens(path)
        else:
            tokens, positions = grid_tokens.file_grid(path, tracks)
    except ParseTimeout:
        return FileResult(relpath, sha256, None, f"timeout (parsing took over {timeout_s:g} s)")
    except Exception as error:  # noqa: BLE001 - music21 raises anything on a bad file; report it
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        return FileResult(relpath, sha256, None, f"corrupt MIDI file ({detail})")
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    write_cache(Path(cache_dir) if cache_dir else None, sha256, kind, tokens, tracks, positions)
    return FileResult(relpath, sha256, tokens, None if tokens else no_tokens_reason(path, kind), positions=positions)


def no_tokens_reason(path: str, kind: str) -> str:
    """Why a readable file gave no tokens. The seed rules read only the first instrument part, so a file
    can hold hundreds of notes and give none: the reason then says how many notes the file holds outside
    the drum channel, in how many tracks, and that ``--tokens grid`` reads them all."""
    if kind != "seed":
        return NO_NOTES[kind]
    try:
        midi = read_midi(path)
    except LofiError:
        return NO_NOTES[kind]
    counts = [sum(1 for m in track if m.type == "note_on" and m.velocity > 0 and m.channel != grid_tokens.DRUM_CHANNEL)
              for track in midi.tracks]
    notes, tracks = sum(counts), sum(1 for count in counts if count)
    if not notes:
        return NO_NOTES[kind]
    return (f"{NO_NOTES[kind]}, but the file has {notes} notes in {tracks} track{'s' if tracks > 1 else ''}: "
            "--tokens grid reads all its parts")


def _reason(error: LofiError, path: str) -> str:
    """``"x.mid: empty file"`` -> ``"empty file"``: the corpus names the file itself."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def tokenize_files(
    folder: Path, files: Sequence[Path], workers: int, timeout_s: float, cache_dir: Path | None, kind: str = "seed",
    tracks: str | None = None, remote: Callable[[list[tuple]], Iterator[FileResult]] | None = None,
) -> Iterator[FileResult]:
    """Yield one result per file: cache hits and bad files first, then parses in ``workers`` processes,
    or by ``remote`` (the :func:`parse_file` jobs on a Dask cluster, :func:`training.corpus.cluster.parse_on_dask`)."""
    misses: list[tuple[str, str, str, float, str | None, str, str | None]] = []
    for file in files:
        result = hash_and_lookup(str(file), file.relative_to(folder).as_posix(), cache_dir, kind, tracks)
        if result.tokens is None and result.reason is None:
            misses.append((str(file), result.path, result.sha256, timeout_s, str(cache_dir) if cache_dir else None,
                           kind, tracks))
        else:
            yield result
    if remote is not None:
        yield from remote(misses)
        return
    if workers <= 1 or len(misses) <= 1:
        for job in misses:
            yield parse_file(*job)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(misses))) as pool:
        futures = {pool.submit(parse_file, *job): job for job in misses}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:
                yield FileResult(job[1], job[2], None, "parser process crashed")
