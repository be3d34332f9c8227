"""Data preparation throughput: cold vs warm token cache, one worker vs all workers.

Runs ``lofi-train prepare`` on a MIDI folder (default: the shared piano folder) as a user would, in
fresh processes, each cold run with an empty temporary cache:

    python benchmarks/prepare_bench.py [FOLDER] [--json]

Prints files/s with one worker (cold), with all workers (cold), with a warm cache, and the ratio
warm/cold, which must stay under 1/10 (issue 2). Exits 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "piano"


def timed_prepare(folder: Path, cache: Path, workers: int | None) -> float:
    """Seconds one ``lofi-train prepare`` process takes, start-up included."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "training.cli", "prepare", str(folder), "-o", f"{scratch}/c.json",
                   "--cache", str(cache)]
        if workers:
            command += ["--workers", str(workers)]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    files = sum(1 for p in args.folder.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        cold_one = timed_prepare(args.folder, Path(one), 1)
        cold_all = timed_prepare(args.folder, Path(many), None)
        warm = timed_prepare(args.folder, Path(many), None)
    figures = {
        "folder": str(args.folder),
        "files": files,
        "cores": cores,
        "cold_1_worker_s": round(cold_one, 2),
        "cold_all_workers_s": round(cold_all, 2),
        "warm_s": round(warm, 2),
        "files_per_s_1_worker": round(files / cold_one, 1),
        "files_per_s_all_workers": round(files / cold_all, 1),
        "files_per_s_warm": round(files / warm, 1),
        "warm_over_cold": round(warm / cold_all, 4),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{files} files in {args.folder} ({cores} cores)")
        print(f"cold, 1 worker:      {cold_one:7.2f} s  {figures['files_per_s_1_worker']:7.1f} files/s")
        print(f"cold, {cores} workers:     {cold_all:7.2f} s  {figures['files_per_s_all_workers']:7.1f} files/s")
        print(f"warm cache:          {warm:7.2f} s  {figures['files_per_s_warm']:7.1f} files/s")
        print(f"warm / cold:         {figures['warm_over_cold']:.4f} (must be < 0.1)")
    return 0 if warm < cold_all / 10 else 1


if __name__ == "__main__":
    sys.exit(main())
