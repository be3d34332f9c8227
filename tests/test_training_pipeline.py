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
    """ONNX Runtime: the window graph gives distributions for every context length 1..window, and the
    step graph fed the same tokens one by one from zero states gives the same probabilities at each."""
    window = ort.InferenceSession(f"{stem}.onnx", providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(f"{stem}.step.onnx", providers=["CPUExecutionProvider"])
    tokens = np.asarray(model["seed_windows"], dtype=np.int32)
    states = {name: np.zeros((len(tokens), size), np.float32) for name, size in model["graphs"]["step"]["states"]}
    names = ["probs"] + [f"{name}_out" for name in states]
    for t in range(WINDOW):
        probs = window.run(["probs"], {"tokens": tokens[:, : t + 1]})[0]
        assert probs.shape == (len(tokens), len(model["vocabulary"]))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        result = step.run(names, {"token": np.ascontiguousarray(tokens[:, t:t + 1]), **states})
        states = dict(zip(states, result[1:]))
        assert np.abs(result[0] - probs).max() <= 1e-4, t + 1

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
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_loss" in rows[0]
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # history.csv and the checkpoint names count epochs alike: each checkpoint names its row's epoch and loss
    saved = sorted(run_dir.glob("weights-improvement-*.keras"))
    assert saved and saved[0].name.startswith("weights-improvement-01-")
    for checkpoint in saved:
        _, _, epoch, loss = checkpoint.stem.split("-")
        row = next(r for r in rows if int(r["epoch"]) == int(epoch))
        assert f"{float(row['loss']):.4f}" == loss


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
    from lofi_live.model.loader import META_VOCABULARY, META_WINDOW, Model, vocabulary_digest

    for suffix in (".onnx", ".step.onnx"):
        session = ort.InferenceSession(str(target.parent / f"tiny{suffix}"), providers=["CPUExecutionProvider"])
        recorded = session.get_modelmeta().custom_metadata_map
        assert recorded[META_VOCABULARY] == vocabulary_digest(model["vocabulary"])
        assert recorded[META_WINDOW] == str(WINDOW)
    assert Model.load(target, provider="cpu").window == WINDOW


def test_sweep_writes_one_midi_per_checkpoint(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert lofi_train(["sweep", str(run_dir), "--steps", "12"]) == 0
    # progress: each checkpoint is announced before its work, then its result
    lines = capsys.readouterr().out.splitlines()
    checkpoints = sorted(p.name for p in run_dir.glob("weights-improvement-*.keras"))
    for number, name in enumerate(checkpoints, 1):
        started = lines.index(f"[{number}/{len(checkpoints)}] {name}: continuing the seed window for 12 tokens")
        assert lines[started + 1].startswith(f"[{number}/{len(checkpoints)}] {name}: ")
        assert "distinct tokens" in lines[started + 1]
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
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "2"]
    second = json.loads((out / "run.json").read_text())
    assert second["epochs_done"] == 2 and second["vocabulary"] == first["vocabulary"]
    assert second["resumed_by"] and second["preset"] == "medium"


def test_resume_refuses_other_options_and_says_what_it_keeps(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A command that asks a run folder for another preset, window or corpus is refused in one line; options
    it leaves at their defaults are the run's, and the resume says which; a corpus changed under the run
    is refused too."""
    mine = tmp_path / "mine.json"
    mine.write_bytes(corpus.read_bytes())
    out = tmp_path / "kept"
    assert lofi_train(["fit", str(mine), "-o", str(out), "--window", str(WINDOW), "--preset", "medium",
                       "--transpose", "--epochs", "1", "--epoch-windows", "64"]) == 0
    capsys.readouterr()
    refused = [
        (["fit", str(mine), "-o", str(out), "--preset", "small", "--epochs", "2"],
         ["--preset small (the run has --preset medium)"]),
        (["fit", str(mine), "-o", str(out), "--window", "6", "--val-fraction", "0.3", "--epochs", "2"],
         ["--window 6 (the run has --window 8)", "--val-fraction 0.3 (the run has --val-fraction 0.1)"]),
        (["fit", str(corpus), "-o", str(out), "--epochs", "2"], [f"this run trains on {mine}, not {corpus}"]),
    ]
    for args, words in refused:
        assert lofi_train(args) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and all(w in lines[0] for w in words), (args, lines)
    assert json.loads((out / "run.json").read_text())["epochs_done"] == 1  # nothing trained
    # the same corpus with the options left out: the run's own are kept, and said
    assert lofi_train(["fit", str(mine), "-o", str(out), "--epochs", "1"]) == 0
    assert "(kept from the run: --preset medium, --window 8, --transpose)" in capsys.readouterr().out
    changed = json.loads(mine.read_text())
    changed["files"] = changed["files"][:-1]
    mine.write_text(json.dumps(changed))
    assert lofi_train(["fit", str(mine), "-o", str(out), "--epochs", "2"]) == 2
    assert "its corpora changed since the run began" in capsys.readouterr().err


def test_fit_says_how_many_files_give_no_window(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Files no longer than the window give no window; fit counts them and names --loop-short."""
    for i in range(3):
        write_onsets(tmp_path / "midi" / f"loop{i}.mid", random_song(10 + i, 6))
    write_onsets(tmp_path / "midi" / "song.mid", random_song(20, 40))
    corpus = tmp_path / "loops.json"
    assert lofi_train(["prepare", str(tmp_path / "midi"), "-o", str(corpus), "--no-cache", "--workers", "1"]) == 0
    common = ["fit", str(corpus), "--window", str(WINDOW), "--val-fraction", "0", "--epochs", "1",
              "--epoch-windows", "32"]
    capsys.readouterr()
    assert lofi_train([*common, "-o", str(tmp_path / "plain")]) == 0
    assert (f"3 of 4 training files and 0 of 0 validation files have at most {WINDOW} tokens and give no window "
            "(--loop-short repeats them until they do)") in capsys.readouterr().out
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["data"]["train_files_without_window"] == 3
    assert lofi_train([*common, "-o", str(tmp_path / "looped"), "--loop-short"]) == 0
    assert "give no window" not in capsys.readouterr().out


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
    length, depth = session.get_inputs()[0].shape[1:]
    assert session.get_inputs()[0].type == "tensor(float)" and not isinstance(length, int) and depth == 1  # [N, L, 1]


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
    assert [r["epoch"] for r in rows] == ["1", "2"]
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


def short_context_differences(model_path: Path, checkpoint: Path) -> tuple[list[float], list[float]]:
    """For every context length 1..window of the model's first seed window: (the largest difference between
    Keras on exactly those tokens, the definition, and each runtime path: ``Model.window_probs``, a reset
    stepper and a fresh stepper advanced token by token; the difference between the window graph and the
    step graph, 0 where the model has none)."""
    from lofi_live.model.loader import Model
    from lofi_live.model.format import encode_inputs
    from training.runs import load_model
    from training.presets import last_position

    network = load_model(checkpoint)
    model = Model.load(model_path, provider="cpu")
    assert model.free_length
    context = np.asarray(model.seed_windows[0])
    walker = model.stepper()
    to_keras, between_graphs = [], []
    for length in range(1, model.window + 1):
        short = context[None, :length]
        inputs = encode_inputs(short, model.encoding, len(model.vocabulary))
        expected = np.asarray(last_position(network, network(inputs, training=False)))[0]
        paths = [model.window_probs(short, cache=False)[0], model.stepper().reset(short[0]),
                 walker.advance(int(short[0, -1]))]
        to_keras.append(max(float(np.abs(found - expected).max()) for found in paths))
        between_graphs.append(float(np.abs(model._run_window(short)[0] - model._read_from_zero(short)[0][0]).max())
                              if model.has_step_graph else 0.0)
    return to_keras, between_graphs


def test_every_short_context_reads_alike_on_real_exports(run_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """docs/MODEL_FORMAT.md, "Short contexts": a context of 1..window tokens is read as it is, from zero
    state, by Keras, the window graph, the step graph, and both stepper paths, for a Sequential preset
    (step + window graphs) and for lstm-attention (a window graph only)."""
    from training.runs import best_checkpoint

    attention = tmp_path / "attention"
    assert lofi_train(["fit", str(corpus), "-o", str(attention), "--preset", "lstm-attention", "--epochs", "1",
                       "--window", str(WINDOW), "--val-fraction", "0", "--batch-size", "32"]) == 0
    for name, run in (("small", run_dir), ("lstm-attention", attention)):
        target = tmp_path / "models" / name
        assert lofi_train(["export", str(run), "-o", str(target)]) == 0
        model = json.loads(target.with_suffix(".json").read_text())
        assert ("step" in model["graphs"]) == (name == "small")
        to_keras, between_graphs = short_context_differences(target, best_checkpoint(run))
        print(f"\n{name}: max |difference| per context length 1..{WINDOW}: to Keras "
              + " ".join(f"{d:.1e}" for d in to_keras)
              + ("; window graph vs step graph " + " ".join(f"{d:.1e}" for d in between_graphs)
                 if name == "small" else ""))
        assert max(to_keras) <= 1e-4 and max(between_graphs) <= 1e-4, (name, to_keras, between_graphs)


def test_without_the_training_extra_arguments_come_first_then_one_line(
    run_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """With TensorFlow, tf2onnx, onnx, music21 and matplotlib absent, every lofi-train command still names a
    bad argument first, and otherwise says in one line to install the [train] extra (exit 2, no traceback)."""
    absent = ("tensorflow", "keras", "tf2onnx", "onnx", "music21", "matplotlib")
    code = (f"import sys; sys.modules.update(dict.fromkeys({absent!r})); "
            "from training.cli import main; sys.exit(main(sys.argv[1:]))")
    install = "is not installed: install the [train] extra"
    cases = [
        (["export", str(run_dir), "-o", str(tmp_path / "x")], f"tensorflow {install}"),
        (["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x")], "no such run folder"),
        (["export", str(run_dir), "--checkpoint", str(tmp_path / "none.keras"), "-o", str(tmp_path / "x")],
         "no such checkpoint file"),
        (["export", str(run_dir), "-o", str(tmp_path / "x"), "--loop-cache", "2"], "--loop-cache 2.0 must be"),
        (["fit", str(corpus), "-o", str(tmp_path / "new-run")], f"tensorflow {install}"),
        (["fit", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r2")], "no such corpus file"),
        (["sweep", str(run_dir)], f"tensorflow {install}"),
        (["prepare", str(tmp_path), "-o", str(tmp_path / "c.json"), "--tokens", "seed"], f"music21 {install}"),
    ]
    for args, words in cases:
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], (args, result.stderr)
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("encoding", ["index", "scaled"])
def test_training_feeds_keras_the_inputs_the_runtime_feeds_the_graphs(encoding: str) -> None:
    """fit's tf.data inputs are lofi_live.model.format.encode_inputs of the windows, bit for bit."""
    from lofi_live.model.format import encode_inputs
    from training.fit.loop import make_dataset
    from training.fit.sequences import TokenFile, make_windows

    vocabulary = ["C4", "D4", "E4", "0.4.7", "hold", "rest"]
    tokens = ["C4", "hold", "D4", "rest", "0.4.7", "hold", "E4", "C4", "rest", "D4"]
    windows = make_windows([TokenFile("a", tokens)], vocabulary, 4)
    inputs, targets = next(iter(make_dataset(windows, encoding, len(vocabulary), 64, False, 0)))
    expected = encode_inputs(windows.inputs(), encoding, len(vocabulary))
    assert inputs.dtype.name == expected.dtype.name and np.array_equal(inputs.numpy(), expected)
    assert np.array_equal(targets.numpy(), windows.targets())
