"""``lofi-live evaluate`` on a grid model: rhythm and onset metrics and their baselines, against a naive loop."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lofi_live.cli import main
from lofi_live.commands.evaluate import evaluate_stream
from lofi_live.tokens.grid import tokens_to_notes
from lofi_live.midi.files import write_midi
from lofi_live.model.loader import Model
from model_fixtures import GRID_VOCABULARY, build_grid_token_model

PITCHED = [t for t in GRID_VOCABULARY if t not in ("hold", "rest")]


def _stream(rng: np.random.Generator, length: int, pitches: int = 10) -> list[str]:
    """A plausible grid stream of the first ``pitches`` onset tokens: onsets followed by holds, some rests."""
    out: list[str] = []
    while len(out) < length:
        out.append(PITCHED[int(rng.integers(0, pitches))])
        out += ["hold"] * int(rng.integers(0, 4))
        out += ["rest"] * int(rng.integers(0, 2))
    return out[:length]


def _kind(token: str) -> int:
    return {"hold": 1, "rest": 2}.get(token, 0)


def _naive_baselines(training: list[str], vocabulary: list[str]) -> dict:
    """The n-gram tables as the docs define them, counted the slow obvious way."""
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = [index[t] for t in training]
    pairs: dict[int, Counter] = {}
    onset_pairs: dict[int, Counter] = {}
    rhythm_pairs: dict[int, Counter] = {}
    onsets = [i for i in ids if _kind(vocabulary[i]) == 0]
    for a, b in zip(ids, ids[1:]):
        pairs.setdefault(a, Counter())[b] += 1
        rhythm_pairs.setdefault(a, Counter())[_kind(vocabulary[b])] += 1
    for a, b in zip(onsets, onsets[1:]):
        onset_pairs.setdefault(a, Counter())[b] += 1

    def best(table: dict[int, Counter], i: int) -> int:
        return min(table[i], key=lambda t: (-table[i][t], t)) if i in table else -1

    counts = Counter(ids)
    size = len(vocabulary)
    return {
        "unigram_counts": [counts.get(i, 0) for i in range(size)],
        "bigram_next": [best(pairs, i) for i in range(size)],
        "onset_bigram_next": [best(onset_pairs, i) for i in range(size)],
        "bigram_rhythm_next": [best(rhythm_pairs, i) for i in range(size)],
    }


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory) -> Path:
    # seed 5: a network whose likeliest token is hold or rest at about a fifth of the positions, so
    # leaving them out of the onset ranking changes the onset figures
    path = build_grid_token_model(tmp_path_factory.mktemp("grid-eval"), seed=5, window=8)
    meta = json.loads(path.read_text())
    training = _stream(np.random.default_rng(7), 400)
    meta["baselines"] = _naive_baselines(training, meta["vocabulary"])
    path.write_text(json.dumps(meta, indent=1))
    return path


def _naive(model: Model, stream: list[str]) -> dict:
    vocabulary = model.vocabulary
    kinds = np.array([_kind(t) for t in vocabulary])
    base = model.baselines
    ids = [model.index[t] for t in stream]
    common_onset = max((i for i in range(len(vocabulary)) if kinds[i] == 0), key=lambda i: (base["unigram_counts"][i], -i))
    hits = Counter()
    onsets = 0
    for i in range(model.window, len(stream)):
        probs = model.window_probs(np.array([ids[i - model.window : i]]))[0]
        truth = _kind(stream[i])
        summed = [probs[kinds == k].sum() for k in range(3)]
        hits["rhythm"] += int(np.argmax(summed) == truth)
        common_class = int(np.argmax([sum(c for c, k in zip(base["unigram_counts"], kinds) if k == j) for j in range(3)]))
        rhythm_guess = base["bigram_rhythm_next"][ids[i - 1]]
        hits["bigram_rhythm"] += int((rhythm_guess if rhythm_guess >= 0 else common_class) == truth)
        if truth != 0:
            continue
        onsets += 1
        order = sorted((j for j in range(len(vocabulary)) if kinds[j] == 0), key=lambda j: -probs[j])
        hits["onset_top1"] += int(order[0] == ids[i])
        hits["onset_top5"] += int(ids[i] in order[:5])
        earlier = [ids[j] for j in range(i - model.window, i) if kinds[ids[j]] == 0]
        guess = base["onset_bigram_next"][earlier[-1]] if earlier else -1
        hits["onset_bigram"] += int((guess if guess >= 0 else common_onset) == ids[i])
    n = len(stream) - model.window
    return {"rhythm_accuracy": hits["rhythm"] / n, "baseline_bigram_rhythm_accuracy": hits["bigram_rhythm"] / n,
            "onset_top1": hits["onset_top1"] / onsets, "onset_top5": hits["onset_top5"] / onsets,
            "baseline_onset_bigram_top1": hits["onset_bigram"] / onsets, "n_onsets": onsets}


def test_grid_metrics_match_a_naive_loop(grid_model):
    model = Model.load(grid_model, provider="cpu")
    # onset tokens the training stream never had: their baseline rows are -1 and fall back
    stream = _stream(np.random.default_rng(11), 150, pitches=14)
    got, expected = evaluate_stream(model, stream), _naive(model, stream)
    assert got["tokens"] == "grid"
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key
        if not key.startswith(("baseline", "n_")):
            assert got[f"network_{key}"] == pytest.approx(value, rel=1e-6), key
    # the stream has all three classes, so the figures are not trivially 0 or 1
    assert 0 < got["rhythm_accuracy"] < 1 and got["n_onsets"] < got["n"]


def test_cli_reads_a_folder_with_the_grid_rule(grid_model, tmp_path, capsys):
    """The folder is tokenized with the grid rule: a held chord written to .mid comes back as onset + holds."""
    tokens = ["0.3.7", "hold", "hold", "hold", "C4", "rest", "E-4", "hold"] * 6
    write_midi(tmp_path / "a.mid", [("a", tokens_to_notes(tokens))], bpm=90)
    assert main(["evaluate", "--model", str(grid_model), str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = Model.load(grid_model, provider="cpu")
    assert result["n"] == len(tokens) - model.window
    assert result == pytest.approx(evaluate_stream(model, tokens))
