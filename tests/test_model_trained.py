"""The runtime on a model made by the real training pipeline (prepare -> fit 1 epoch -> export).

Checks what the hand-built test models cannot: tf2onnx's graphs load and pass the checks, the step
graph equals the window graph, generation round-trips through music21, evaluate runs, and the bench
measures the seed's approach (Keras predict) on the export's own checkpoint. Skips without TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("music21")

from midi_factory import random_song, write_onsets  # noqa: E402

pytestmark = pytest.mark.slow
WINDOW = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from training.cli import main as lofi_train

    root = tmp_path_factory.mktemp("trained")
    for i in range(4):
        write_onsets(root / "midi" / f"song{i}.mid", random_song(10 + i, 40))
    corpus, run, target = root / "corpus.json", root / "run", root / "models" / "t"
    # the seed tokenization: its round trip through music21 is what this file checks (grid: test_grid_pipeline)
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(corpus), "--no-cache", "--workers", "1",
                       "--tokens", "seed"]) == 0
    assert lofi_train(["fit", str(corpus), "-o", str(run), "--epochs", "1", "--window", str(WINDOW),
                       "--val-fraction", "0.25", "--batch-size", "32"]) == 0
    assert lofi_train(["export", str(run), "-o", str(target)]) == 0
    return target.with_suffix(".json")


def test_loads_and_step_equals_window(exported):
    from lofi_live.model.loader import Model

    model = Model.load(exported, provider="auto")
    assert model.provider == "cpu" and model.has_step_graph and model.window == WINDOW
    windows = np.asarray(model.seed_windows[:4])
    expected = model.window_probs(windows)
    stepper = model.stepper()
    for window, probs in zip(windows, expected):
        assert np.allclose(stepper.reset(window), probs, atol=1e-5)
    history = list(windows[0])
    for step in range(1, 2 * WINDOW + 1):
        history.append(step % len(model.vocabulary))
        probs = stepper.advance(step % len(model.vocabulary))
    assert np.allclose(probs, model.window_probs(np.array([history[-WINDOW:]]))[0], atol=1e-5)


def test_generate_round_trip_and_evaluate(exported, tmp_path, capsys):
    from lofi_live.cli import main
    from lofi_live.tokens.midi import music21_tokens

    out = tmp_path / "g.mid"
    assert main(["generate", "--model", str(exported), "--steps", "120", "--seed", "3", "-o", str(out)]) == 0
    tokens = music21_tokens(out)
    assert len(tokens) == 120
    capsys.readouterr()
    assert main(["evaluate", "--model", str(exported), str(exported.parent.parent / "midi"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["n", "tokens", "top1", "top5", "nll", "network_top1", "network_top5", "network_nll",
                            "baseline_unigram_top1", "baseline_bigram_top1"]
    assert result["tokens"] == "seed"
    assert result["n"] > 0 and result["baseline_bigram_top1"] is not None


def test_bench_measures_keras_predict(exported):
    from lofi_live.commands.bench import keras_window
    from lofi_live.model.loader import Model

    model = Model.load(exported, provider="cpu")
    stats, note = keras_window(model, 5)
    assert note is None, note
    assert set(stats) == {"median_ms", "p99_ms"} and stats["median_ms"] > 0
    assert model.meta["_bench"]["keras_max_abs_diff_vs_onnx"] < 1e-4
