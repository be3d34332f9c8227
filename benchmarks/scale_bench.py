"""Scaling figures: prepare on 1 and 2 local Dask workers, and fit's peak memory on a streamed corpus at 1x and 4x.

    python benchmarks/scale_bench.py [FOLDER] [--sample N] [--json]

1. ``lofi-train prepare FOLDER --sample N --no-cache --scheduler ADDRESS`` against a ``LocalCluster`` of one,
   then two, single-thread worker processes (and the local process pool with one worker, for the cost of
   Dask itself): files/s and the ratio 2 workers / 1 worker.
2. The prepared shards (1x), and a shard folder holding every file four times under other names (4x):
   ``lofi-train fit`` of one epoch of ``--epoch-windows`` windows on each, streamed from the shard folder and,
   for comparison, in memory from the merged corpus file. Prints each process's peak RSS and the ratios 4x/1x.
   The streamed ratio must stay under 1.1 (memory flat as the corpus grows); exits 1 when it does not.
3. Training windows/s of that epoch in one process and on two TF workers on 127.0.0.1 (``--strategy
   multiworker``, ``TF_CONFIG``), start-up excluded (the epoch's own time, from history.csv's run).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "pop909"
FIT = ["--epochs", "1", "--epoch-windows", "2048", "--val-fraction", "0", "--window", "32", "--stride", "16",
       "--seed", "1"]


def lofi_train(*args: str) -> tuple[float, int]:
    """Run one ``lofi-train`` process: (wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"lofi-train {' '.join(args)} failed: {process.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss // 1024


def prepare_rates(folder: Path, sample: int, out: Path) -> dict[str, float]:
    """Files/s of a cold prepare: local pool with 1 worker, Dask with 1 and 2 worker processes."""
    from distributed import LocalCluster

    common = [str(folder), "--sample", str(sample), "--no-cache", "--shard-files", "100"]
    figures = {"pool_1_worker": sample / lofi_train("prepare", *common, "-o", str(out / "pool"), "--workers", "1")[0]}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            seconds, _ = lofi_train("prepare", *common, "-o", str(out / "shards"), "--scheduler",
                                    cluster.scheduler_address)
        figures[f"dask_{workers}_workers"] = sample / seconds
    return {k: round(v, 1) for k, v in figures.items()}


def epoch_seconds(log: str) -> float:
    """The epoch's wall time, from the ``epoch N/M: ... (S s)`` line of a multi-worker fit, or Keras's
    ``steps - time - ms/step`` line."""
    for line in reversed(log.splitlines()):
        if line.startswith("epoch ") and line.rstrip().endswith(" s)"):
            return float(line.rsplit("(", 1)[1].split()[0])
        if " - " in line and "ms/step" in line:  # Keras: "32/32 - 3s - 98ms/step - ..."
            fields = line.split(" - ")
            return int(fields[0].split("/")[0]) * float(fields[2].removesuffix("ms/step")) / 1000
    raise SystemExit(f"no epoch time in the output of fit:\n{log[-2000:]}")


def windows_per_s(shards: Path, out: Path) -> dict[str, float]:
    """Training windows/s of one epoch: one process, then two multi-worker processes."""
    windows = int(FIT[FIT.index("--epoch-windows") + 1])
    single = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(shards), "-o", str(out / "w1"), *FIT],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "training.cli", "fit", str(shards), "-o", str(out / "w2"), *FIT,
             "--strategy", "multiworker"], cwd=ROOT, env=dict(os.environ, TF_CONFIG=json.dumps(config)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise SystemExit(f"multi-worker fit failed:\n{logs[0][-2000:]}\n{logs[1][-2000:]}")
    one, two = epoch_seconds(single.stdout), epoch_seconds(logs[0])
    return {"1_process": round(windows / one), "2_tf_workers": round(windows / two)}


def quadruple(shards: Path, target: Path) -> None:
    """A shard folder with every file of ``shards`` four times (``copyK/`` before each path)."""
    from training.corpus.io import load_shards
    from training.corpus.parse import FileResult
    from training.corpus.shards import write_shards

    corpus = load_shards(shards)
    results = [FileResult(f"copy{k}/{f['path']}", f["sha256"], f["tokens"]) for k in range(4) for f in corpus["files"]]
    header = {key: corpus[key] for key in ("format", "source", "tokens", "rules")}
    write_shards(results, [r.path for r in results], target, 100, header)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--sample", type=int, default=300, help="files to prepare (default 300)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        rates = prepare_rates(args.folder, args.sample, out)
        quadruple(out / "shards", out / "shards4")
        peaks: dict[str, int] = {}
        for scale, shards in (("1x", out / "shards"), ("4x", out / "shards4")):
            lofi_train("merge", str(shards), "-o", str(out / f"{scale}.json.gz"))
            peaks[f"streamed_{scale}_mb"] = lofi_train("fit", str(shards), "-o", str(out / f"s{scale}"), *FIT)[1]
            peaks[f"in_memory_{scale}_mb"] = lofi_train("fit", str(out / f"{scale}.json.gz"), "-o",
                                                        str(out / f"m{scale}"), *FIT)[1]
        tokens = json.loads((out / "s1x" / "run.json").read_text())["data"]["tokens"]
        speeds = windows_per_s(out / "shards", out)
    figures = {
        "folder": str(args.folder),
        "files": args.sample,
        "cores": os.cpu_count(),
        "prepare_files_per_s": rates,
        "dask_2_over_1_workers": round(rates["dask_2_workers"] / rates["dask_1_workers"], 2),
        "fit_tokens_1x": tokens,
        "fit_peak_rss_mb": peaks,
        "streamed_rss_4x_over_1x": round(peaks["streamed_4x_mb"] / peaks["streamed_1x_mb"], 3),
        "in_memory_rss_4x_over_1x": round(peaks["in_memory_4x_mb"] / peaks["in_memory_1x_mb"], 3),
        "fit_windows_per_s": speeds,
        "tf_2_over_1_workers": round(speeds["2_tf_workers"] / speeds["1_process"], 2),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0 if figures["streamed_rss_4x_over_1x"] < 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
