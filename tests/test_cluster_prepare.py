"""``prepare --scheduler`` on a real Dask cluster (a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1), shard folders, ``merge``, and a worker killed mid-run."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from midi_factory import random_song, write_onsets
from training.corpus.io import load_corpus

distributed = pytest.importorskip("distributed")

DASK = Path(sys.executable).parent / "dask"
ROOT = Path(__file__).resolve().parent.parent


def lofi_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, env=env)


def start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)


def stop(process: subprocess.Popen) -> None:
    """Stop one process we started, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_scheduler(folder: Path, processes: list[subprocess.Popen]) -> str:
    """Start ``dask scheduler`` on a free port of 127.0.0.1 (appended to ``processes``); its address."""
    address_file = folder / "scheduler.json"
    processes.append(start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(address_file)], folder / "scheduler.log"))
    deadline = time.monotonic() + 30
    while not address_file.exists():
        assert processes[-1].poll() is None and time.monotonic() < deadline, (folder / "scheduler.log").read_text()
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written whole, but give the scheduler its first listen
    return json.loads(address_file.read_text())["address"]


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A scheduler on a free port of 127.0.0.1 and two one-thread workers: (address, [scheduler, worker, worker])."""
    processes: list[subprocess.Popen] = []
    try:
        address = start_scheduler(tmp_path, processes)
        for number in range(2):
            processes.append(start([str(DASK), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                    "--no-nanny", "--no-dashboard"], tmp_path / f"worker{number}.log"))
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, processes
    finally:
        for process in reversed(processes):
            stop(process)


def slow_folder(folder: Path, count: int) -> Path:
    """``count`` copies of a 20,000-step file: about 0.4 s a parse, so a run lasts long enough to break into."""
    first = write_onsets(folder / "00.mid", random_song(0, 20000))
    for number in range(1, count):
        shutil.copy(first, folder / f"{number:02d}.mid")
    return folder


def small_folder(folder: Path) -> Path:
    for number in range(12):
        write_onsets(folder / f"sub{number % 3}" / f"{number:02d}.mid", random_song(number, 40))
    (folder / "broken.mid").write_bytes(b"not midi")
    return folder


def test_dask_prepare_gives_the_local_corpus(tmp_path: Path, dask_cluster: tuple[str, list]) -> None:
    address, _ = dask_cluster
    data = small_folder(tmp_path / "midi")
    env = dict(os.environ, LOFI_LIVE_CACHE=str(tmp_path / "cache"))
    local = lofi_train("prepare", str(data), "-o", str(tmp_path / "local.json.gz"), "--workers", "1", "--no-cache")
    assert local.returncode == 0, local.stderr
    remote = lofi_train("prepare", str(data), "-o", str(tmp_path / "dask.json.gz"), "--scheduler", address, env=env)
    assert remote.returncode == 0, remote.stderr
    assert "12 files" in remote.stdout and "(0 from cache), 1 failed" in remote.stdout
    assert "failed: broken.mid: not a MIDI file" in remote.stdout
    assert load_corpus(tmp_path / "dask.json.gz") == load_corpus(tmp_path / "local.json.gz")
    # the client wrote the workers' results to its cache: a rerun parses nothing, also into shards
    shards = lofi_train("prepare", str(data), "-o", str(tmp_path / "shards"), "--scheduler", address,
                        "--shard-files", "5", env=env)
    assert shards.returncode == 0, shards.stderr
    assert "(12 from cache)" in shards.stdout
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "index.json", "shard-00000.jsonl.gz", "shard-00001.jsonl.gz", "shard-00002.jsonl.gz"]
    assert load_corpus(tmp_path / "shards") == load_corpus(tmp_path / "local.json.gz")


def test_a_killed_worker_costs_only_its_files(tmp_path: Path, dask_cluster: tuple[str, list]) -> None:
    """Kill one worker (SIGKILL, by PID) once results flow: its running parse is retried on the other one."""
    address, processes = dask_cluster
    data = slow_folder(tmp_path / "midi", 16)
    cache = tmp_path / "cache"
    env = dict(os.environ, LOFI_LIVE_CACHE=str(cache))
    run = subprocess.Popen([sys.executable, "-m", "training.cli", "prepare", str(data), "-o",
                            str(tmp_path / "shards"), "--shard-files", "4", "--scheduler", address],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not cache.exists() or not any(cache.rglob("*.json")):  # one file is cached per copy: one hash
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        os.kill(processes[1].pid, signal.SIGKILL)
        processes[1].wait()
        out, err = run.communicate(timeout=120)
    finally:
        stop(run)
    assert run.returncode == 0, err
    assert "16 files" in out and "0 failed" in out
    corpus = load_corpus(tmp_path / "shards")
    assert [f["path"] for f in corpus["files"]] == [f"{n:02d}.mid" for n in range(16)]
    assert all(f["tokens"] == corpus["files"][0]["tokens"] for f in corpus["files"])


def test_a_lost_scheduler_is_one_line_exit_2(tmp_path: Path, dask_cluster: tuple[str, list]) -> None:
    address, processes = dask_cluster
    data = slow_folder(tmp_path / "midi", 30)
    cache = tmp_path / "cache"
    run = subprocess.Popen([sys.executable, "-m", "training.cli", "prepare", str(data), "-o", str(tmp_path / "c.json"),
                            "--scheduler", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, LOFI_LIVE_CACHE=str(cache)))
    try:
        deadline = time.monotonic() + 60
        while not cache.exists() or not any(cache.rglob("*.json")):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        os.kill(processes[0].pid, signal.SIGKILL)
        processes[0].wait()
        _, err = run.communicate(timeout=120)
    finally:
        stop(run)
    assert run.returncode == 2 and err.count("\n") == 1, err
    assert f"{address}: lost the Dask scheduler during the run" in err


def test_once_connected_distributed_logs_nothing_of_its_own(dask_cluster: tuple[str, list]) -> None:
    """A lost scheduler makes distributed log from several modules, the batched comm at INFO with a
    traceback (seen once in the test above, a race): the one-line error must be all there is."""
    from training.corpus.cluster import connect

    levels = {name: logging.getLogger(name).level for name in ("distributed", "distributed.client")}
    client = connect(dask_cluster[0])
    try:
        for name in ("distributed.batched", "distributed.client", "distributed.comm.tcp", "distributed.core"):
            assert not logging.getLogger(name).isEnabledFor(logging.ERROR), name
    finally:
        client.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_unreachable_scheduler_or_none_without_workers_is_one_line_exit_2(tmp_path: Path) -> None:
    write_onsets(tmp_path / "midi" / "a.mid", random_song(1, 20))
    output = str(tmp_path / "c.json")
    result = lofi_train("prepare", str(tmp_path / "midi"), "-o", output, "--scheduler", "tcp://127.0.0.1:9")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "tcp://127.0.0.1:9: cannot reach the Dask scheduler" in result.stderr
    processes: list[subprocess.Popen] = []
    try:
        address = start_scheduler(tmp_path, processes)
        result = lofi_train("prepare", str(tmp_path / "midi"), "-o", output, "--scheduler", address)
    finally:
        for process in processes:
            stop(process)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{address}: the Dask scheduler has no worker (start one with: dask worker {address})" in result.stderr
    assert not Path(output).exists()


def test_shards_merge_and_bad_shard_folders(tmp_path: Path) -> None:
    data = small_folder(tmp_path / "midi")
    single = lofi_train("prepare", str(data), "-o", str(tmp_path / "one.json"), "--workers", "2", "--no-cache")
    assert single.returncode == 0, single.stderr
    sharded = lofi_train("prepare", str(data), "-o", str(tmp_path / "shards"), "--shard-files", "4", "--no-cache")
    assert sharded.returncode == 0, sharded.stderr
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert [s["files"] for s in index["shards"]] == [3, 4, 4, 1]  # broken.mid sorts first, in shard 0
    assert index["failures"] == [{"path": "broken.mid", "reason": "not a MIDI file (no MThd header)"}]
    merged = lofi_train("merge", str(tmp_path / "shards"), "-o", str(tmp_path / "merged.json.gz"))
    assert merged.returncode == 0, merged.stderr
    assert load_corpus(tmp_path / "merged.json.gz") == load_corpus(tmp_path / "one.json") == load_corpus(
        tmp_path / "shards")
    # a second run with fewer shards replaces the folder's shards
    again = lofi_train("prepare", str(data), "-o", str(tmp_path / "shards"), "--shard-files", "100", "--no-cache")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["index.json", "shard-00000.jsonl.gz"]

    (tmp_path / "shards" / "shard-00000.jsonl.gz").write_bytes(gzip.compress(b'{"path": "a"}\n'))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    for command, words in (
        (("merge", str(tmp_path / "shards"), "-o", str(tmp_path / "m.json")), "corrupt shard (line 1 needs a path"),
        (("merge", str(tmp_path / "other"), "-o", str(tmp_path / "m.json")), "not a shard corpus (no index.json"),
        (("prepare", str(data), "-o", str(tmp_path / "other"), "--shard-files", "2"), "is not a shard corpus"),
        (("prepare", str(data), "-o", str(tmp_path / "x"), "--shard-files", "0"), "--shard-files must be at least 1"),
    ):
        result = lofi_train(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_without_the_cluster_extra_scheduler_says_so(tmp_path: Path) -> None:
    write_onsets(tmp_path / "a.mid", random_song(1, 20))
    code = ("import sys; sys.modules.update(dict.fromkeys(('distributed', 'dask'))); "
            "from training.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "prepare", str(tmp_path), "-o", str(tmp_path / "c.json"),
                             "--scheduler", "tcp://127.0.0.1:8786"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "dask.distributed is not installed: install the [cluster] extra" in result.stderr
