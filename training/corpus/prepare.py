"""``lofi-train prepare``: MIDI folder -> corpus of tokens, one entry per MIDI file.

The parts: :mod:`training.corpus.parse` (finding files, the token cache, parses in a process pool),
:mod:`training.corpus.cluster` (the parses on a Dask cluster, ``--scheduler``), :mod:`training.corpus.io`
(the corpus file, docs/CORPUS_FORMAT.md) and :mod:`training.corpus.shards` (``--shard-files``). A file
that fails is listed with its reason and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lofi_live.errors import LofiError
from lofi_live.tokens.rules import TOKENIZATIONS
from training.corpus.io import corpus_header, save_corpus
from training.corpus.parse import DEFAULT_TIMEOUT_S, FileResult, default_cache_dir, select_files, tokenize_files
from training.corpus.shards import write_shards
from training.tfsetup import require

#: Default tokenization of ``prepare``.
DEFAULT_TOKENS = "grid"


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
    stream = tokenize_files(folder, files, workers, timeout_s, cache_dir, kind, tracks, _remote(client, cache_dir))
    results = sorted(with_progress(stream, len(files), progress), key=lambda r: r.path)
    return {
        **corpus_header(folder, kind, tracks),
        "files": [r.entry() for r in results if r.tokens],
        "failures": [{"path": r.path, "reason": r.reason} for r in results if not r.tokens],
        "cached_files": sum(r.cached for r in results),
    }


def _remote(client: Any, cache_dir: Path | None) -> Callable[[list[tuple]], Iterator[FileResult]] | None:
    """The parses on the Dask cluster of ``client`` (None: in local processes)."""
    if client is None:
        return None
    from training.corpus.cluster import parse_on_dask

    return lambda jobs: parse_on_dask(client, jobs, cache_dir)


def prepare_shards(args: argparse.Namespace, cache_dir: Path | None, client: Any) -> dict[str, Any]:
    """``prepare --shard-files N``: tokenize (locally or on ``client``'s cluster) straight into shards."""
    folder: Path = args.data_dir
    files = select_files(folder, args.sample, args.seed)
    workers = max(1, min(args.workers or os.cpu_count() or 1, len(files)))
    stream = tokenize_files(folder, files, workers, args.timeout, cache_dir, args.tokens, args.tracks,
                            _remote(client, cache_dir))
    names = [f.relative_to(folder).as_posix() for f in files]
    return write_shards(with_progress(stream, len(files), sys.stderr.isatty()), names, args.output,
                        args.shard_files, corpus_header(folder, args.tokens, args.tracks))


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


def report(output: Path, files: int, tokens: int, cached: int, failures: Sequence[dict[str, str]], kind: str) -> None:
    """The summary line of a prepare run (one corpus file or a shard folder), then one line per failed file."""
    print(f"{output}: {files} files, {tokens} {kind} tokens ({cached} from cache), {len(failures)} failed")
    for failure in failures:
        print(f"  failed: {failure['path']}: {failure['reason']}")


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
    client = None
    if args.scheduler:
        from training.corpus.cluster import connect

        client = connect(args.scheduler)
    try:
        if args.shard_files:
            index = prepare_shards(args, cache, client)
            files = sum(s["files"] for s in index["shards"])
            tokens = sum(s["tokens"] for s in index["shards"])
            report(args.output, files, tokens, index["cached_files"], index["failures"], args.tokens)
            return 0
        corpus = prepare(args.data_dir, args.sample, args.seed, args.workers, args.timeout, cache,
                         progress=sys.stderr.isatty(), kind=args.tokens, tracks=args.tracks, client=client)
    finally:
        if client is not None:
            client.close()
    save_corpus(corpus, args.output)
    tokens = sum(len(f["tokens"]) for f in corpus["files"])
    report(args.output, len(corpus["files"]), tokens, corpus["cached_files"], corpus["failures"], args.tokens)
    return 0
