"""``lofi-train prepare``: MIDI folder -> corpus file of tokens, one entry per MIDI file.

Two tokenizations (``--tokens``): ``grid`` (default), one token per 0.5-beat step with ``hold`` and
``rest`` (:mod:`lofi_live.tokens.grid`, mido only, fast), and ``seed``, music21 with the seed
article's exact rules, so a model trained on it sees the tokens the seed saw. music21 is slow (about
a second a file), so files are parsed in a process pool, each under a time limit, and each result is
cached by the SHA-256 of the file's bytes and the tokenization: a rerun only parses what changed. A file that fails is listed with its reason and the run goes on. The corpus is JSON (see
docs/CORPUS_FORMAT.md), never pickle, and keeps file boundaries so windows never straddle two files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import signal
import sys
import threading
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from lofi_live.tokens import grid as grid_tokens
from lofi_live.errors import LofiError
from lofi_live.files import checked_file
from lofi_live.midi.files import check_midi_path, read_midi
from lofi_live.tokens.midi import seed_rule_tokens
from lofi_live.tokens.rules import TOKENIZATIONS
from training.corpus.cache import (  # noqa: F401 - re-exported: cluster and tests import them from here
    RULES,
    SEED_RULES,
    _cache_file,
    _cache_stamp,
    _read_cache,
    _write_cache,
)
from training.tfsetup import require

CORPUS_FORMAT = 1
MIDI_SUFFIXES = (".mid", ".midi")
DEFAULT_TIMEOUT_S = 120.0
#: Corpus files (or their gzip content) above this size are refused: POP909 whole is about 10 MB.
MAX_CORPUS_BYTES = 1024 * 1024 * 1024
#: Failure reason of a file that parses but gives no tokens, by tokenization.
NO_NOTES = {
    "seed": "no notes or chords in what the seed rules read (first instrument part, else all notes)",
    "grid": "no notes outside the drum channel",
}
#: Default tokenization of ``prepare``.
DEFAULT_TOKENS = "grid"


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
    _write_cache(Path(cache_dir) if cache_dir else None, sha256, kind, tokens, tracks, positions)
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
    tracks: str | None = None, client: Any = None,
) -> Iterator[FileResult]:
    """Yield one result per file: cache hits and bad files first, then parses in ``workers`` processes,
    or on the Dask cluster of ``client`` (a ``distributed.Client``, see :mod:`training.corpus.cluster`)."""
    misses: list[tuple[str, str, str, float, str | None, str, str | None]] = []
    for file in files:
        result = hash_and_lookup(str(file), file.relative_to(folder).as_posix(), cache_dir, kind, tracks)
        if result.tokens is None and result.reason is None:
            misses.append((str(file), result.path, result.sha256, timeout_s, str(cache_dir) if cache_dir else None,
                           kind, tracks))
        else:
            yield result
    if client is not None:
        from training.corpus.cluster import parse_on_dask

        yield from parse_on_dask(client, misses, cache_dir)
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


def prepare(
    folder: Path,
    sample: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cache_dir: Path | None = None,
    progress: bool = True,
    kind: str = DEFAULT_TOKENS,
    tracks: str | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Tokenize a folder into a corpus dictionary (see docs/CORPUS_FORMAT.md); ``kind`` is seed or grid.

    With a Dask ``client`` the parses run on its cluster instead of ``workers`` local processes.
    """
    files = select_files(folder, sample, seed)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files)))
    stream = tokenize_files(folder, files, workers, timeout_s, cache_dir, kind, tracks, client)
    results = sorted(with_progress(stream, len(files), progress), key=lambda r: r.path)
    return {
        **corpus_header(folder, kind, tracks),
        "files": [r.entry() for r in results if r.tokens],
        "failures": [{"path": r.path, "reason": r.reason} for r in results if not r.tokens],
        "cached_files": sum(r.cached for r in results),
    }


def select_files(folder: Path, sample: int | None, seed: int) -> list[Path]:
    """The MIDI files below ``folder`` (``sample`` of them drawn with ``seed``), sorted by relative path."""
    files = find_midi_files(folder)
    if sample is not None and sample < len(files):
        files = sorted(random.Random(seed).sample(files, sample), key=lambda p: p.relative_to(folder).as_posix())
    return files


def corpus_header(folder: Path, kind: str, tracks: str | None) -> dict[str, Any]:
    """The fields a corpus (one file, or a shard folder's index) holds besides its files and failures."""
    return {
        "format": CORPUS_FORMAT,
        "source": str(folder.resolve()),
        "tokens": kind,
        "rules": RULES[kind] + (f"; tracks named {tracks}" if tracks else ""),
    }


def with_progress(stream: Iterator[FileResult], total: int, progress: bool) -> Iterator[FileResult]:
    """Pass the results on, advancing a bar on stderr per file when ``progress`` (local and Dask runs alike)."""
    if not progress:
        yield from stream
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("tokenizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("tokenizing", total=total)
        for result in stream:
            yield result
            bar.advance(task)


def save_corpus(corpus: dict[str, Any], path: Path) -> None:
    """Write the corpus as JSON (gzip when the name ends in ``.gz``), atomically."""
    body = {key: value for key, value in corpus.items() if key != "cached_files"}
    data = json.dumps(body, separators=(",", ":")).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        raise LofiError(f"{path}: cannot write corpus ({error.strerror or error})") from None


def _gunzip(data: bytes, file: Path) -> bytes:
    """Decompress, refusing a gzip bomb that would expand past :data:`MAX_CORPUS_BYTES`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_CORPUS_BYTES + 1)
    if len(out) > MAX_CORPUS_BYTES:
        raise LofiError(f"{file}: expands to over {MAX_CORPUS_BYTES / 1e6:.0f} MB, too large for a corpus file")
    if not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")
    return out


def load_corpus(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a corpus file, or a shard folder (:mod:`training.corpus.cluster`) whole; any problem is a
    one-line :class:`LofiError` naming the file."""
    if Path(path).is_dir():
        from training.corpus.cluster import load_shards

        return load_shards(Path(path))
    file, size = checked_file(path, "a corpus file (make one with lofi-train prepare)", MAX_CORPUS_BYTES,
                              missing="no such corpus file")
    if size == 0:
        raise LofiError(f"{file}: empty file, not a corpus (make one with lofi-train prepare)")
    try:
        data = file.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, file)
        corpus = json.loads(data)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except RecursionError:
        raise LofiError(f"{file}: not a corpus file (JSON nested too deeply)") from None
    except (ValueError, EOFError, zlib.error) as error:
        raise LofiError(f"{file}: not a corpus file (invalid JSON or gzip: {str(error).splitlines()[0]})") from None
    return check_corpus(corpus, file)


def check_corpus(corpus: Any, file: Path) -> dict[str, Any]:
    """A parsed corpus checked field by field (files as path + token strings, at least one file)."""
    if (not isinstance(corpus, dict) or corpus.get("format") != CORPUS_FORMAT
            or not isinstance(corpus.get("files"), list)):
        raise LofiError(f"{file}: not a corpus file (expected a JSON object with format {CORPUS_FORMAT} and files)")
    for index, entry in enumerate(corpus["files"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("tokens"), list)
            or not all(isinstance(t, str) for t in entry["tokens"])
        ):
            raise LofiError(f"{file}: corrupt corpus (file entry {index} needs a path and a list of token strings)")
    if not corpus["files"]:
        raise LofiError(f"{file}: corpus holds no tokenized files")
    return corpus


def corpus_tokens(corpus: dict[str, Any]) -> str:
    """The tokenization a corpus was made with (corpora from before ``--tokens`` hold seed tokens)."""
    kind = corpus.get("tokens", "seed")
    if kind not in TOKENIZATIONS:
        raise LofiError(f"unknown tokenization {kind!r} in corpus {corpus.get('source', '')}")
    return kind


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="folder searched for *.mid/*.midi files")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CORPUS",
                        help="corpus file to write (.json, or .json.gz for gzip); with --shard-files, a folder")
    parser.add_argument("--tokens", choices=TOKENIZATIONS, default=DEFAULT_TOKENS,
                        help="grid: one token per 0.5 beat with hold and rest (default, mido); "
                        "seed: the seed article's onset tokens (music21, exact)")
    parser.add_argument("--tracks", metavar="GLOB",
                        help="grid tokens: read only the tracks whose name matches GLOB (case-insensitive), "
                        "e.g. PIANO for POP909's accompaniment")
    parser.add_argument("--sample", type=int, metavar="N", help="tokenize only N files drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="random seed for --sample (default 0)")
    parser.add_argument("--workers", type=int, metavar="N", help="parser processes (default: all cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="parse on the Dask cluster of this scheduler, e.g. tcp://HOST:8786 ([cluster] extra); "
                        "the files must be readable at the same path on its workers")
    parser.add_argument("--shard-files", type=int, metavar="N",
                        help="write -o as a folder of gzip JSON-lines shards of N files each plus index.json, "
                        "so the corpus need not fit in memory")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SEC",
                        help=f"time limit per file (default {DEFAULT_TIMEOUT_S:g} s)")
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="token cache folder (default $LOFI_LIVE_CACHE or ~/.cache/lofi-live/tokens)")
    parser.add_argument("--no-cache", action="store_true", help="parse every file, neither read nor write the cache")


def run(args: argparse.Namespace) -> int:
    if args.sample is not None and args.sample < 1:
        raise LofiError(f"--sample must be at least 1, not {args.sample}")
    if args.timeout <= 0:
        raise LofiError(f"--timeout must be positive, not {args.timeout:g}")
    if args.tracks is not None and args.tokens != "grid":
        raise LofiError("--tracks works with --tokens grid (the seed rules read the first instrument part)")
    if args.tokens == "seed":
        require("music21")  # the seed rules are music21's; grid tokens need only mido
    if args.shard_files is not None and args.shard_files < 1:
        raise LofiError(f"--shard-files must be at least 1, not {args.shard_files}")
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    if args.scheduler or args.shard_files:
        from training.corpus import cluster

        return cluster.run_prepare(args, cache)
    corpus = prepare(args.data_dir, args.sample, args.seed, args.workers, args.timeout, cache,
                     progress=sys.stderr.isatty(), kind=args.tokens, tracks=args.tracks)
    save_corpus(corpus, args.output)
    tokens = sum(len(f["tokens"]) for f in corpus["files"])
    report(args.output, len(corpus["files"]), tokens, corpus["cached_files"], corpus["failures"], args.tokens)
    return 0


def report(output: Path, files: int, tokens: int, cached: int, failures: Sequence[dict[str, str]], kind: str) -> None:
    """The summary line of a prepare run (one corpus file or a shard folder), then one line per failed file."""
    print(f"{output}: {files} files, {tokens} {kind} tokens ({cached} from cache), {len(failures)} failed")
    for failure in failures:
        print(f"  failed: {failure['path']}: {failure['reason']}")
