"""The loop cache: its votes, its mixing, and that every prediction path of a model applies it alike."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lofi_live.model.loop_cache import LoopCache
from lofi_live.model.loader import Model
from model_fixtures import VOCABULARY, build_model

V = len(VOCABULARY)


def test_votes_go_to_what_followed_the_last_token():
    # last token 2 occurred at positions 1 and 4, followed by 5 and 7; the nearer occurrence weighs more
    votes = LoopCache(weight=0.5, decay=0.5).votes([0, 2, 5, 9, 2, 7, 2], size=10)
    assert votes is not None
    assert set(np.flatnonzero(votes)) == {5, 7}
    assert votes[7] > votes[5]
    assert votes.sum() == pytest.approx(1.0)


def test_no_votes_when_the_last_token_is_new():
    assert LoopCache(weight=0.5).votes([1, 2, 3, 4], size=10) is None
    probs = np.full(10, 0.1, np.float32)
    assert LoopCache(weight=0.5).mix(probs, [1, 2, 3, 4]) is probs


@given(st.lists(st.integers(0, 9), min_size=1, max_size=40), st.floats(0.0, 0.95), st.floats(0.05, 1.0))
def test_mix_is_a_distribution(window, weight, decay):
    probs = np.random.default_rng(len(window)).dirichlet(np.ones(10)).astype(np.float32)
    mixed = LoopCache(weight, decay).mix(probs, window)
    assert mixed.shape == (10,)
    assert np.all(mixed >= 0)
    assert mixed.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_repeating_loop_is_carried_on():
    loop = [3, 8, 1, 6]
    window = (loop * 8)[:30]  # ends on 3, 8 -> the loop says 1 comes next
    probs = np.full(10, 0.1, np.float32)
    assert int(np.argmax(LoopCache(weight=0.5).mix(probs, window))) == 1


def _with_cache(json_path, weight: float, decay: float = 0.9):
    meta = json.loads(json_path.read_text())
    meta["loop_cache"] = {"weight": weight, "decay": decay}
    json_path.write_text(json.dumps(meta))
    return json_path


@pytest.mark.parametrize("step", [True, False])
def test_window_graph_and_stepper_mix_the_same_way(tmp_path, step):
    model = Model.load(_with_cache(build_model(tmp_path, window=16, step=step), 0.4), provider="cpu")
    window = np.random.default_rng(1).integers(0, 4, 16)  # few distinct tokens: the cache votes
    expected = model.window_probs(window[None, :])[0]
    network = model.window_probs(window[None, :], cache=False)[0]
    assert not np.allclose(expected, network)
    assert np.allclose(model.stepper().reset(window), expected, atol=1e-5)


@pytest.mark.parametrize("entry", [{"weight": 1.0}, {"weight": -0.1}, {"weight": 0.5, "decay": 0}, {"weight": "half"}, [0.5]])
def test_a_bad_loop_cache_entry_is_refused(tmp_path, entry):
    json_path = build_model(tmp_path)
    meta = json.loads(json_path.read_text())
    meta["loop_cache"] = entry
    json_path.write_text(json.dumps(meta))
    result = subprocess.run([sys.executable, "-m", "lofi_live.cli", "generate", "--model", str(json_path),
                             "--steps", "4", "-o", str(tmp_path / "o.mid")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "loop_cache" in result.stderr
