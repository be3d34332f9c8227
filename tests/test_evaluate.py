"""``lofi-live evaluate``: metrics over a folder's token stream against a naive re-computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lofi_live.cli import main
from lofi_live.commands.evaluate import EPSILON, evaluate_stream, tokenize_folder
from lofi_live.commands.generate import write_tokens_midi
from lofi_live.model.loader import Model
from lofi_live.tokens.rules import nearest_token
from model_fixtures import VOCABULARY, build_model

KEYS = ["n", "tokens", "top1", "top5", "nll", "network_top1", "network_top5", "network_nll",
        "baseline_unigram_top1", "baseline_bigram_top1"]
#: what the naive loop recomputes (the network_* figures equal the mixed ones for a model without a loop cache)
SCORED = ["n", "top1", "top5", "nll", "baseline_unigram_top1", "baseline_bigram_top1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    training = [int(i) for i in rng.integers(0, 6, 300)]  # a skewed training stream for the baselines
    return build_model(tmp_path_factory.mktemp("eval"), window=8, seed=9, training_tokens=training)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("data")
    for name in ("b.mid", "a.mid", "c.midi"):  # evaluated in sorted name order
        tokens = [VOCABULARY[i] for i in rng.integers(0, 12, 20)] + ["D#6", "11.3.6"]  # two unknown tokens
        write_tokens_midi(root / name, tokens, 90)
    (root / "notes.txt").write_text("not midi")
    (root / "broken.mid").write_bytes(b"MThd\x00\x00")
    return root


def _naive(model: Model, stream: list[str]) -> dict:
    inputs = [model.index[nearest_token(t, model.vocabulary)] for t in stream]
    counts = model.baselines["unigram_counts"]
    unigram = int(np.argmax(counts))
    following = model.baselines["bigram_next"]
    hits = {"top1": 0, "top5": 0, "uni": 0, "bi": 0}
    nll = 0.0
    for i in range(model.window, len(stream)):
        probs = model.window_probs(np.array([inputs[i - model.window : i]]))[0]
        target = model.index.get(stream[i], -1)
        order = list(np.argsort(-probs, kind="stable"))
        hits["top1"] += target == order[0]
        hits["top5"] += target in order[:5]
        nll -= math.log(max(float(probs[target]), EPSILON)) if target >= 0 else math.log(EPSILON)
        hits["uni"] += target == unigram
        guess = following[inputs[i - 1]]
        hits["bi"] += target == (guess if guess >= 0 else unigram)
    n = len(stream) - model.window
    return {"n": n, "top1": hits["top1"] / n, "top5": hits["top5"] / n, "nll": nll / n,
            "baseline_unigram_top1": hits["uni"] / n, "baseline_bigram_top1": hits["bi"] / n}


def test_metrics_match_a_naive_loop(tiny):
    model = Model.load(tiny, provider="cpu")
    rng = np.random.default_rng(4)
    stream = [VOCABULARY[i] for i in rng.integers(0, 8, 120)] + ["D#6", "C4", "1.4.7.10"] * 3
    got, expected = evaluate_stream(model, stream), _naive(model, stream)
    assert list(got) == KEYS
    assert got["tokens"] == "seed"
    for key in SCORED:
        assert got[key] == pytest.approx(expected[key], rel=1e-6), key
    for key in ("top1", "top5", "nll"):
        assert got[f"network_{key}"] == got[key]  # no loop cache: the network alone is what plays
    assert got["baseline_unigram_top1"] > 0 and got["baseline_bigram_top1"] > 0


def test_cli_json_keys_and_sorted_stream(tiny, folder, capsys):
    root = folder
    assert main(["evaluate", "--model", str(tiny), str(root), "--json", "--tokenizer", "mido"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result) == KEYS
    assert result["n"] == 3 * 22 - 8
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert result["nll"] > 0
    assert "broken.mid" in captured.err  # a bad file is listed and skipped
    stream, used, failed = tokenize_folder(root, "mido")
    assert [p.name for p in used] == ["a.mid", "b.mid", "c.midi"]
    model = Model.load(tiny, provider="cpu")
    assert evaluate_stream(model, stream) == pytest.approx(result)


def test_cli_table(tiny, folder, capsys):
    assert main(["evaluate", "--model", str(tiny), str(folder), "--tokenizer", "mido"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "bigram top-1" in out


def test_music21_and_mido_agree_on_generated_files(tiny, folder):
    pytest.importorskip("music21")
    assert tokenize_folder(folder, "music21")[0] == tokenize_folder(folder, "mido")[0]


def test_too_few_tokens_and_empty_folder(tiny, tmp_path, capsys):
    write_tokens_midi(tmp_path / "short.mid", ["C4", "E4"], 90)
    assert main(["evaluate", "--model", str(tiny), str(tmp_path), "--json", "--tokenizer", "mido"]) == 2
    assert "needs more than the window" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--model", str(tiny), str(empty)]) == 2
    assert "no .mid" in capsys.readouterr().err
