"""``fit --strategy multiworker``: two real TF worker processes on 127.0.0.1 (``TF_CONFIG``) train one run folder,
resume it after both are restarted, and export it; its loss is close to a single process's on the same data."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from midi_factory import write_onsets  # noqa: E402
from training.cli import main as lofi_train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIT = ["--preset", "small", "--window", "8", "--batch-size", "32", "--val-fraction", "0.2", "--seed", "1"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def fit_on_two_workers(corpus: Path, run: Path, epochs: int, logs: Path) -> None:
    """Start worker 0 and worker 1 of one TF cluster; both must end with exit code 0."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), CUDA_VISIBLE_DEVICES="")
        log = (logs / f"worker{index}-{epochs}.log").open("w")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "training.cli", "fit", str(corpus), "-o", str(run), *FIT, "--epochs", str(epochs),
             "--strategy", "multiworker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for process in processes:
            process.wait(timeout=300)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, process in enumerate(processes):
        assert process.returncode == 0, (logs / f"worker{index}-{epochs}.log").read_text()[-3000:]


def cyclic_shards(folder: Path) -> Path:
    """Six files of one rotating cycle (learnt within an epoch), prepared into a folder of three shards."""
    scale = [[60], [62], [64], [65], [67], [60, 64, 67]]
    for number in range(6):
        write_onsets(folder / "midi" / f"song{number}.mid", (scale[number:] + scale[:number]) * 20)
    shards = folder / "shards"
    assert lofi_train(["prepare", str(folder / "midi"), "-o", str(shards), "--shard-files", "2", "--no-cache",
                       "--workers", "1"]) == 0
    return shards


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_workers_train_resume_and_export(tmp_path: Path) -> None:
    scale = [[60], [62], [64], [65], [67], [60, 64, 67]]  # a cycle a model learns within an epoch
    for number in range(8):
        write_onsets(tmp_path / "midi" / f"song{number}.mid", (scale[number % 6:] + scale[:number % 6]) * 25)
    corpus = tmp_path / "corpus.json"
    assert lofi_train(["prepare", str(tmp_path / "midi"), "-o", str(corpus), "--no-cache", "--workers", "1"]) == 0
    single = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(corpus), "-o", str(tmp_path / "single"),
                             *FIT, "--epochs", "1"], cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr

    run = tmp_path / "mw"
    fit_on_two_workers(corpus, run, 1, tmp_path)
    one, two = history(tmp_path / "single"), history(run)
    assert list(two[0]) == list(one[0]) and len(two) == 1
    for key in ("loss", "val_loss"):
        assert abs(float(two[0][key]) - float(one[0][key])) < 0.05, (key, one, two)  # nats
    assert float(two[0]["val_loss"]) < 0.5 * math.log(6)  # it learnt: far below a uniform guess
    assert len(list(run.glob("weights-improvement-01-*.keras"))) == 1 and (run / "curves.png").exists()

    fit_on_two_workers(corpus, run, 2, tmp_path)  # both workers restarted: the run resumes after epoch 1
    assert [row["epoch"] for row in history(run)] == ["1", "2"]
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 2
    assert "resuming the run after epoch 1" in (tmp_path / "worker0-2.log").read_text()
    assert lofi_train(["export", str(run), "-o", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model.onnx").exists()


def test_two_workers_stream_a_shard_folder_like_one_process(tmp_path: Path) -> None:
    shards = cyclic_shards(tmp_path)
    single = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(shards), "-o", str(tmp_path / "single"),
                             *FIT, "--epochs", "1"], cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    fit_on_two_workers(shards, tmp_path / "mw", 1, tmp_path)
    one, two = history(tmp_path / "single"), history(tmp_path / "mw")
    for key in ("loss", "val_loss"):
        assert abs(float(two[0][key]) - float(one[0][key])) < 0.05, (key, one, two)


def test_mirrored_streams_a_shard_folder_like_one_process(tmp_path: Path) -> None:
    """``--strategy mirrored`` (every GPU here, else the CPU) through the same step, on streamed shards."""
    shards = cyclic_shards(tmp_path)
    for name in ("none", "mirrored"):
        result = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(shards), "-o", str(tmp_path / name),
                                 *FIT, "--epochs", "1", "--strategy", name], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    one, mirrored = history(tmp_path / "none"), history(tmp_path / "mirrored")
    assert list(mirrored[0]) == list(one[0])
    assert abs(float(mirrored[0]["loss"]) - float(one[0]["loss"])) < 0.05, (one, mirrored)
    assert json.loads((tmp_path / "mirrored" / "run.json").read_text())["data"]["streamed"] is True


def test_multiworker_without_tf_config_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(tmp_path / "c.json"), "-o",
                             str(tmp_path / "r"), "--strategy", "multiworker"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "reads the cluster from TF_CONFIG, which is not set" in result.stderr
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}})
    result = subprocess.run([sys.executable, "-m", "training.cli", "fit", str(tmp_path / "c.json"), "-o",
                             str(tmp_path / "r"), "--strategy", "multiworker"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "TF_CONFIG must read" in result.stderr
