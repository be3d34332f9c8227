"""Preparation on a Dask cluster, and corpora written as shards (``prepare --scheduler``, ``--shard-files``, ``merge``).

A large collection (the Lakh MIDI set: ~176,000 files) outgrows one machine: tokenizing takes hours on one
core and its tokens may not fit in memory. So ``prepare`` can send each file's parse to an existing Dask
cluster (``dask scheduler`` and ``dask worker`` processes, or dask-jobqueue / dask-kubernetes) instead of local
processes, and write the corpus as a folder of shards that is never held whole in memory:

* ``index.json``: the corpus header (format, source, tokens, rules), ``shard_files``, one entry per shard
  (name, files, tokens) and every failure;
* ``shard-00000.jsonl.gz``, ...: gzip JSON lines, one ``{"path", "sha256", "tokens"}`` per tokenized file.
  Shard ``k`` holds the tokenized files among the ``k``-th ``shard_files`` files of the sorted file list,
  so a local and a Dask run give byte-identical shards.

What stays as in a local run: cache hits are read on the client machine and never sent out, and each result is
written to the client's cache; every failure is listed with its reason; the progress bar counts files. A Dask
worker that dies costs only the parses it was running: the scheduler gives them to another worker (up to
``distributed.scheduler.allowed-failures`` deaths per file, then the file is listed as ``parser process
crashed``). Workers read the MIDI files by path, so they must see the data folder at the same path (a shared
file system). ``--timeout`` is not applied on Dask workers: their tasks run in threads, where the SIGALRM
time limit cannot reach.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import sys
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from lofi_live.errors import LofiError
from training.corpus.prepare import (
    FileResult,
    _gunzip,
    _write_cache,
    check_corpus,
    corpus_header,
    load_corpus,
    parse_file,
    report,
    save_corpus,
    select_files,
    tokenize_files,
    with_progress,
)

INDEX = "index.json"
SHARD_RE = re.compile(r"^shard-\d{5,}\.jsonl\.gz$")
#: Seconds to reach a scheduler and to see at least one of its workers before giving up.
CONNECT_TIMEOUT_S = 10
CLUSTER_EXTRA = "install the [cluster] extra (pip install -e '.[cluster]')"


def connect(address: str) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address`` with at least one worker; else a one-line error."""
    try:
        from distributed import Client
    except ImportError:
        raise LofiError(f"dask.distributed is not installed: {CLUSTER_EXTRA}") from None
    # the client's own log would repeat, as a timestamped ERROR line, what our one-line errors say
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LofiError(f"{address}: cannot reach the Dask scheduler ({detail})") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        client.close()
        raise LofiError(f"{address}: the Dask scheduler has no worker (start one with: dask worker {address})") from None
    return client


def parse_on_dask(client: Any, jobs: Sequence[tuple], cache_dir: Path | None) -> Iterator[FileResult]:
    """Run :func:`training.corpus.prepare.parse_file` for each job on the cluster; yield results as they come.

    Workers get no cache folder (theirs may be another machine's disk): the client writes each result
    to its own cache, as a local run does.
    """
    from distributed import KilledWorker, as_completed
    from distributed.comm import CommClosedError

    futures = {client.submit(parse_file, *job[:4], None, *job[5:], pure=False): job for job in jobs}
    for future in as_completed(futures, loop=client.loop):
        path, _, sha256, _, _, kind, tracks = futures.pop(future)
        try:
            result = future.result()
        except KilledWorker:
            result = FileResult(path, sha256, None, "parser process crashed")
        except (CancelledError, CommClosedError):  # the scheduler went away: given up, or lost mid-request
            raise LofiError(f"{client.scheduler.address}: lost the Dask scheduler during the run: run prepare "
                            "again (with the cache, files already parsed are not parsed again)") from None
        future.release()
        if result.tokens is not None:
            _write_cache(cache_dir, result.sha256, kind, result.tokens, tracks, result.positions)
        yield result


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.jsonl.gz"


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
            lines = "".join(json.dumps(r.entry(),
                                       separators=(",", ":")) + "\n" for r in done)
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


def read_index(folder: Path) -> dict[str, Any]:
    """A shard folder's ``index.json``, checked; a missing or broken one is a one-line error."""
    file = folder / INDEX
    try:
        index = json.loads(file.read_text())
    except FileNotFoundError:
        raise LofiError(f"{folder}: not a shard corpus (no {INDEX}; make one with lofi-train prepare --shard-files)") from None
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:
        raise LofiError(f"{file}: not a shard index (invalid JSON: {str(error).splitlines()[0]})") from None
    shards = index.get("shards") if isinstance(index, dict) else None
    if (not isinstance(index, dict) or index.get("layout") != "shards" or not isinstance(shards, list)
            or not all(isinstance(s, dict) and SHARD_RE.match(str(s.get("name", ""))) for s in shards)
            or not isinstance(index.get("failures"), list)):
        raise LofiError(f"{file}: not a shard index (expected layout shards, shards named shard-NNNNN.jsonl.gz "
                        "and failures)")
    return index


def read_shard(file: Path) -> Iterator[dict[str, Any]]:
    """The file entries of one shard, in order; an unreadable or corrupt shard is a one-line error."""
    try:
        data = _gunzip(file.read_bytes(), file)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except (EOFError, ValueError) as error:
        raise LofiError(f"{file}: corrupt shard (gzip: {str(error).splitlines()[0]})") from None
    for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise LofiError(f"{file}: corrupt shard (line {number} is not JSON)") from None
        if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("tokens"), list) or not all(isinstance(t, str) for t in entry["tokens"])):
            raise LofiError(f"{file}: corrupt shard (line {number} needs a path and a list of token strings)")
        yield entry


def load_shards(folder: Path) -> dict[str, Any]:
    """A shard folder read whole into one corpus dictionary, as :func:`training.corpus.prepare.load_corpus` gives."""
    index = read_index(folder)
    files = [entry for shard in index["shards"] for entry in read_shard(folder / shard["name"])]
    corpus = {key: index[key] for key in ("format", "source", "tokens", "rules") if key in index}
    return check_corpus({**corpus, "files": files, "failures": index["failures"]}, folder)


def prepare_shards(args: argparse.Namespace, cache_dir: Path | None, client: Any) -> dict[str, Any]:
    """``prepare --shard-files N``: tokenize (locally or on ``client``'s cluster) straight into shards."""
    folder: Path = args.data_dir
    files = select_files(folder, args.sample, args.seed)
    workers = max(1, min(args.workers or os.cpu_count() or 1, len(files)))
    stream = tokenize_files(folder, files, workers, args.timeout, cache_dir, args.tokens, args.tracks, client)
    names = [f.relative_to(folder).as_posix() for f in files]
    return write_shards(with_progress(stream, len(files), sys.stderr.isatty()), names, args.output,
                        args.shard_files, corpus_header(folder, args.tokens, args.tracks))


def run_prepare(args: argparse.Namespace, cache_dir: Path | None) -> int:
    """``prepare`` with ``--scheduler`` and/or ``--shard-files`` (the arguments already checked by corpus.run)."""
    from training.corpus.prepare import prepare

    client = connect(args.scheduler) if args.scheduler else None
    try:
        if args.shard_files:
            index = prepare_shards(args, cache_dir, client)
            files = sum(s["files"] for s in index["shards"])
            tokens = sum(s["tokens"] for s in index["shards"])
            report(args.output, files, tokens, index["cached_files"], index["failures"], args.tokens)
            return 0
        corpus = prepare(args.data_dir, args.sample, args.seed, args.workers, args.timeout, cache_dir,
                         progress=sys.stderr.isatty(), kind=args.tokens, tracks=args.tracks, client=client)
    finally:
        if client is not None:
            client.close()
    save_corpus(corpus, args.output)
    tokens = sum(len(f["tokens"]) for f in corpus["files"])
    report(args.output, len(corpus["files"]), tokens, corpus["cached_files"], corpus["failures"], args.tokens)
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """``lofi-train merge``: a shard folder -> one corpus file."""
    parser.add_argument("shards", type=Path, metavar="SHARD_DIR", help="shard folder from lofi-train prepare --shard-files")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CORPUS",
                        help="corpus file to write (.json, or .json.gz for gzip)")


def run(args: argparse.Namespace) -> int:
    if not args.shards.is_dir():
        raise LofiError(f"{args.shards}: not a folder (merge joins the shards of a prepare --shard-files folder)")
    corpus = load_corpus(args.shards)
    save_corpus(corpus, args.output)
    print(f"{args.output}: {len(corpus['files'])} files, {sum(len(f['tokens']) for f in corpus['files'])} tokens "
          f"from {len(read_index(args.shards)['shards'])} shards, {len(corpus['failures'])} failed")
    return 0
