"""prepare -> fit -> export -> ONNX Runtime parity -> sweep on tiny real data; resume; fine-tuning; bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("music21")

import onnxruntime as ort  # noqa: E402

from midi_factory import random_song, write_onsets  # noqa: E402
from training.cli import main as lofi_train  # noqa: E402

WINDOW = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    for i in range(5):
        write_onsets(root / "midi" / f"song{i}.mid", random_song(i, 50))
    out = root / "corpus.json"
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(out), "--no-cache", "--workers", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(corpus: Path) -> Path:
    out = corpus.parent / "run"
    code = lofi_train(["fit", str(corpus), "-o", str(out), "--epochs", "2", "--window", str(WINDOW),
                       "--val-fraction", "0.3", "--transpose", "--oversample", "20", "--batch-size", "32"])
    assert code == 0
    return out



def assert_graphs_agree(stem, model: dict) -> None:
    """ONNX Runtime: the window graph gives distributions, and the step graph fed the same 32 tokens
    one by one from zero states gives the same probabilities."""
    window = ort.InferenceSession(f"{stem}.onnx", providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(f"{stem}.step.onnx", providers=["CPUExecutionProvider"])
    tokens = np.asarray(model["seed_windows"], dtype=np.int32)
    probs = window.run(["probs"], {"tokens": tokens})[0]
    assert probs.shape == (len(tokens), len(model["vocabulary"]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    states = {name: np.zeros((len(tokens), size), np.float32) for name, size in model["graphs"]["step"]["states"]}
    names = ["probs"] + [f"{name}_out" for name in states]
    for t in range(WINDOW):
        result = step.run(names, {"token": tokens[:, t:t + 1], **states})
        states = dict(zip(states, result[1:]))
    assert np.abs(result[0] - probs).max() <= 1e-4

def test_fit_writes_a_complete_run(run_dir: Path) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    assert run["preset"] == "small" and run["input_encoding"] == "index" and run["window"] == WINDOW
    assert run["vocabulary"] == sorted(run["vocabulary"])
    assert run["epochs_done"] == 2 and run["command"].startswith("lofi-train fit")
    assert run["data"]["validation_files"] and run["data"]["transpose"] is True
    assert len(run["baselines"]["unigram_counts"]) == len(run["vocabulary"])
    assert all(len(w) == WINDOW for w in run["seed_windows"])
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_loss" in rows[0]
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list(run_dir.glob("weights-improvement-01-*.keras"))


def test_export_meets_the_contract_and_onnx_matches(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny"
    assert lofi_train(["export", str(run_dir), "-o", str(target)]) == 0
    model = json.loads(target.with_suffix(".json").read_text())
    for key in ("format", "name", "preset", "window", "grid_beats", "input_encoding", "vocabulary", "graphs",
                "seed_windows", "baselines", "data", "metrics", "training"):
        assert key in model, key
    assert model["name"] == "tiny" and model["grid_beats"] == 0.5
    for graph in model["graphs"].values():
        assert hashlib.sha256((target.parent / graph["file"]).read_bytes()).hexdigest() == graph["sha256"]
    assert model["metrics"]["parity_max_abs_diff"] <= 1e-4
    assert model["metrics"]["step_parity_max_abs_diff"] <= 1e-4
    vocab = len(model["vocabulary"])
    assert len(model["baselines"]["bigram_next"]) == vocab
    assert_graphs_agree(target.parent / "tiny", model)
    # both graphs are bound to the JSON (vocabulary digest and window in their metadata), and load
    from lofi_live.model import META_VOCABULARY, META_WINDOW, Model, vocabulary_digest

    for suffix in (".onnx", ".step.onnx"):
        session = ort.InferenceSession(str(target.parent / f"tiny{suffix}"), providers=["CPUExecutionProvider"])
        recorded = session.get_modelmeta().custom_metadata_map
        assert recorded[META_VOCABULARY] == vocabulary_digest(model["vocabulary"])
        assert recorded[META_WINDOW] == str(WINDOW)
    assert Model.load(target, provider="cpu").window == WINDOW


def test_sweep_writes_one_midi_per_checkpoint(run_dir: Path) -> None:
    assert lofi_train(["sweep", str(run_dir), "--steps", "12"]) == 0
    with (run_dir / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    checkpoints = sorted(p.name for p in run_dir.glob("weights-improvement-*.keras"))
    assert [r["checkpoint"] for r in rows] == checkpoints
    for row in rows:
        assert len(row["tokens"].split()) == 12
        assert 1 <= int(row["distinct_tokens"]) <= 12 and 1 <= int(row["longest_repeat"]) <= 12
        midi = mido.MidiFile(run_dir / "sweep" / row["checkpoint"].replace(".keras", ".mid"))
        assert sum(m.type == "note_on" and m.velocity > 0 for m in midi.tracks[1]) >= 12


def test_resume_continues_from_the_last_epoch(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    common = ["fit", str(corpus), "-o", str(out), "--window", str(WINDOW), "--preset", "medium"]
    assert lofi_train([*common, "--epochs", "1"]) == 0
    first = json.loads((out / "run.json").read_text())
    assert lofi_train([*common, "--epochs", "2"]) == 0
    with (out / "history.csv").open() as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["0", "1"]
    second = json.loads((out / "run.json").read_text())
    assert second["epochs_done"] == 2 and second["vocabulary"] == first["vocabulary"]
    assert second["resumed_by"] and second["preset"] == "medium"


def test_fine_tuning_shares_the_vocabulary(run_dir: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    assert lofi_train(["fit", str(corpus), "-o", str(out), "--epochs", "1", "--window", str(WINDOW),
                       "--init-from", str(run_dir), "--val-fraction", "0", "--epoch-windows", "64"]) == 0
    tuned = json.loads((out / "run.json").read_text())
    assert tuned["vocabulary"] == json.loads((run_dir / "run.json").read_text())["vocabulary"]
    assert tuned["options"]["init_from"] == str(run_dir) and tuned["preset"] == "small"
    assert "--epoch-windows 64" in tuned["command"]


def test_seed_preset_exports_with_scaled_input(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "seedrun"
    assert lofi_train(["fit", str(corpus), "-o", str(out), "--preset", "seed", "--epochs", "1",
                       "--window", str(WINDOW)]) == 0
    assert lofi_train(["export", str(out), "-o", str(tmp_path / "seed")]) == 0
    model = json.loads((tmp_path / "seed.json").read_text())
    assert model["input_encoding"] == "scaled"
    assert [s for s, _ in model["graphs"]["step"]["states"]] == ["h0", "c0", "h1", "c1", "h2", "c2"]
    assert model["metrics"]["step_parity_max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "seed.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_inputs()[0].shape[1:] == [WINDOW, 1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True)


def test_bad_input_exits_2_with_one_line(tmp_path: Path, run_dir: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": 1, "files": [')
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    (empty_run / "run.json").write_text((run_dir / "run.json").read_text())
    bad_checkpoint = tmp_path / "bad.keras"
    bad_checkpoint.write_bytes(b"not a zip")
    cases = [
        (["fit", str(broken), "-o", str(tmp_path / "r1")], str(broken)),
        (["fit", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r2")], "no such corpus file"),
        (["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")], "no such run folder"),
        (["export", str(tmp_path), "-o", str(tmp_path / "x")], "run.json"),
        (["export", str(empty_run), "-o", str(tmp_path / "x")], "no weights-improvement"),
        (["export", str(run_dir), "--checkpoint", str(bad_checkpoint), "-o", str(tmp_path / "x")], "bad.keras"),
        (["sweep", str(empty_run)], "no weights-improvement"),
    ]
    for args, words in cases:
        result = run_cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and words in lines[0], (args, result.stderr)


def test_vocabulary_can_cover_a_second_corpus(corpus: Path, tmp_path: Path) -> None:
    write_onsets(tmp_path / "lofi" / "loop.mid", [[90], [91], [60, 63, 67, 70]] * 6)
    second = tmp_path / "lofi.json"
    assert lofi_train(["prepare", str(tmp_path / "lofi"), "-o", str(second), "--no-cache"]) == 0
    pre = tmp_path / "pre"
    assert lofi_train(["fit", str(corpus), "-o", str(pre), "--epochs", "1", "--window", str(WINDOW),
                       "--vocab-corpus", str(second)]) == 0
    vocabulary = json.loads((pre / "run.json").read_text())["vocabulary"]
    assert {"F#6", "G6", "7.10.0.3"} <= set(vocabulary)
    tuned = tmp_path / "tuned"
    assert lofi_train(["fit", str(second), "-o", str(tuned), "--epochs", "1", "--window", "4",
                       "--vocab-from", str(pre), "--val-fraction", "0"]) == 0
    assert json.loads((tuned / "run.json").read_text())["vocabulary"] == vocabulary


def test_sequence_preset_trains_on_every_position_and_exports_the_last(
    corpus: Path, run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "seq"
    common = ["fit", str(corpus), "-o", str(out), "--preset", "small-seq", "--window", str(WINDOW),
              "--val-fraction", "0.3", "--batch-size", "32"]
    assert lofi_train([*common, "--epochs", "1"]) == 0
    assert lofi_train([*common, "--epochs", "2"]) == 0  # resume: reloads the compiled last-position metrics
    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "small-seq" and run["epochs_done"] == 2
    assert run["options"]["stride"] == WINDOW // 2 and run["data"]["stride"] == WINDOW // 2
    with (out / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for key in ("loss", "accuracy", "last_loss", "last_accuracy", "val_loss", "val_last_loss", "val_last_accuracy"):
        assert key in rows[0], key
    target = tmp_path / "models" / "seq"
    assert lofi_train(["export", str(out), "-o", str(target)]) == 0
    model = json.loads(target.with_suffix(".json").read_text())
    assert model["preset"] == "small-seq" and model["graphs"]["step"]["states"] == [["h0", 256], ["c0", 256]]
    assert model["metrics"]["parity_max_abs_diff"] <= 1e-4 and model["metrics"]["step_parity_max_abs_diff"] <= 1e-4
    assert_graphs_agree(target.parent / "seq", model)
    # small and small-seq share their weights: a last-position run can start a sequence run
    tuned = tmp_path / "seq-tuned"
    assert lofi_train(["fit", str(corpus), "-o", str(tuned), "--preset", "small-seq", "--epochs", "1",
                       "--window", str(WINDOW), "--init-from", str(run_dir), "--val-fraction", "0",
                       "--epoch-windows", "64"]) == 0
    assert json.loads((tuned / "run.json").read_text())["preset"] == "small-seq"
    assert "last_accuracy" in (tuned / "history.csv").read_text().splitlines()[0]
