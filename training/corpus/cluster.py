"""Preparation on a Dask cluster (``prepare --scheduler``).

A large collection (the Lakh MIDI set: ~176,000 files) outgrows one machine: tokenizing takes hours on one
core and its tokens may not fit in memory. So ``prepare`` can send each file's parse to an existing Dask
cluster (``dask scheduler`` and ``dask worker`` processes, or dask-jobqueue / dask-kubernetes) instead of local
processes (and write the corpus as shards, :mod:`training.corpus.shards`, so it is never held whole in memory).


What stays as in a local run: cache hits are read on the client machine and never sent out, and each result is
written to the client's cache; every failure is listed with its reason; the progress bar counts files. A Dask
worker that dies costs only the parses it was running: the scheduler gives them to another worker (up to
``distributed.scheduler.allowed-failures`` deaths per file, then the file is listed as ``parser process
crashed``). Workers read the MIDI files by path, so they must see the data folder at the same path (a shared
file system). ``--timeout`` is not applied on Dask workers: their tasks run in threads, where the SIGALRM
time limit cannot reach.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, Iterator, Sequence

from lofi_live.errors import LofiError
from training.corpus.parse import FileResult, parse_file, write_cache

#: Seconds to reach a scheduler and to see at least one of its workers before giving up.
CONNECT_TIMEOUT_S = 10
CLUSTER_EXTRA = "install the [cluster] extra (pip install -e '.[cluster]')"


def connect(address: str) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address`` with at least one worker; else a one-line error."""
    try:
        from distributed import Client
    except ImportError:
        raise LofiError(f"dask.distributed is not installed: {CLUSTER_EXTRA}") from None
    # distributed's own log would repeat what our one-line errors say, as timestamped lines with
    # tracebacks (a lost scheduler: the client's ERROR, the batched comm's INFO with its traceback)
    for name in ("distributed", "distributed.client"):  # dask's config gives the client a level of its own
        logging.getLogger(name).setLevel(logging.CRITICAL)
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
    """Run :func:`training.corpus.parse.parse_file` for each job on the cluster; yield results as they come.

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
            write_cache(cache_dir, result.sha256, kind, result.tokens, tracks, result.positions)
        yield result
