"""The step graph reproduces the window graph for every context length; the stepper re-syncs its context
every window; both predictors of every kind of model agree on a short context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lofi_live.model.loader import Model, Stepper, WindowStepper, repeat_to_window
from lofi_live.tokens.rules import TokenError
from model_fixtures import VOCABULARY, build_model

V = len(VOCABULARY)


@pytest.fixture(scope="module", params=["index", "scaled"])
def model(request, tmp_path_factory) -> Model:
    folder = tmp_path_factory.mktemp(request.param)
    return Model.load(build_model(folder, encoding=request.param, window=16, seed=3), provider="cpu")


def _windows(count: int, window: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (count, window))


def test_reset_equals_window_graph(model):
    windows = _windows(6, model.window)
    expected = model.window_probs(windows)
    stepper = model.stepper()
    assert isinstance(stepper, Stepper)
    for window, probs in zip(windows, expected):
        assert np.allclose(stepper.reset(window), probs, atol=1e-5)


def test_resync_every_window(model):
    """Every ``window`` advances the prediction is exactly the window graph's on the last tokens."""
    stepper = model.stepper()
    history = list(_windows(1, model.window, seed=1)[0])
    stepper.reset(history)
    rng = np.random.default_rng(2)
    checked = 0
    for step in range(1, 3 * model.window + 5):
        token = int(rng.integers(V))
        history.append(token)
        probs = stepper.advance(token)
        assert probs.shape == (V,) and abs(float(probs.sum()) - 1) < 1e-4
        if step % model.window == 0:
            expected = model.window_probs(np.array([history[-model.window:]]))[0]
            assert np.allclose(probs, expected, atol=1e-5)
            checked += 1
    assert checked == 3
    assert stepper.history == history[-model.window:]


def test_between_resyncs_the_context_is_everything_since_the_reset(model):
    """Three advances after a full reset the primary state has read window + 3 tokens from zero state."""
    stepper = model.stepper()
    history = list(_windows(1, model.window, seed=4)[0])
    stepper.reset(history)
    for token in (1, 2, 3):
        history.append(token)
        probs = stepper.advance(token)
    expected = model._read_from_zero(np.array([history]))[0][0]
    assert np.abs(probs - expected).max() < 1e-5
    assert np.abs(probs - model.window_probs(np.array([history[-model.window:]]))[0]).max() > 1e-3  # not the window


def test_short_reset_window(model):
    stepper = model.stepper()
    probs = stepper.reset([1, 2, 3])
    assert probs.shape == (V,)
    with pytest.raises(ValueError):
        stepper.reset([])
    with pytest.raises(ValueError):
        stepper.advance(V)


def test_fixed_batch_one_graph(tmp_path):
    """A step graph exported with batch 1 runs the shadow state separately, with the same results."""
    model = Model.load(build_model(tmp_path, window=8, batch=1), provider="cpu")
    stepper = model.stepper()
    assert not stepper._paired
    history = list(range(8))
    assert np.allclose(stepper.reset(history), model.window_probs(np.array([history]))[0], atol=1e-5)
    for step in range(1, 17):
        history.append(step % V)
        probs = stepper.advance(step % V)
        if step % 8 == 0:
            assert np.allclose(probs, model.window_probs(np.array([history[-8:]]))[0], atol=1e-5)


def test_window_stepper_without_step_graph(tmp_path):
    model = Model.load(build_model(tmp_path, step=False, window=8), provider="cpu")
    assert not model.has_step_graph
    stepper = model.stepper()
    assert isinstance(stepper, WindowStepper)
    history = list(range(8))
    assert np.allclose(stepper.reset(history), model.window_probs(np.array([history]))[0])
    history.append(5)
    assert np.allclose(stepper.advance(5), model.window_probs(np.array([history[-8:]]))[0])
    assert stepper.history == history[-8:]


def test_encode_maps_unknown_tokens_and_refuses_malformed_ones(model):
    encoded = model.encode(["C4", "C#7", "0.4.7.10", "E4"])
    assert encoded[0] == model.index["C4"] and encoded[-1] == model.index["E4"]
    assert model.vocabulary[encoded[1]] in VOCABULARY
    assert model.vocabulary[encoded[2]] == "0.4.7"  # nearest: one pitch class apart
    with pytest.raises(TokenError, match="not-a-token"):
        model.encode(["C4", "not-a-token"])


def _short_context_differences(model: Model, context: np.ndarray) -> list[float]:
    """For every length 1..window: the largest difference between the window path
    (:meth:`Model.window_probs`, loop cache mixed in as played), a reset stepper and a fresh stepper
    advanced token by token."""
    differences = []
    walker = model.stepper()
    for length in range(1, model.window + 1):
        short = context[:length]
        window_path = model.window_probs(short[None, :])[0]
        reset = model.stepper().reset(short)
        walked = walker.advance(int(short[-1]))
        differences.append(float(max(np.abs(reset - window_path).max(), np.abs(walked - window_path).max())))
    return differences


@pytest.mark.parametrize("step", [True, False], ids=["step+window", "window only"])
@pytest.mark.parametrize("free_length", [True, False], ids=["free length", "fixed length"])
def test_every_short_context_reads_the_same_on_every_path(tmp_path, step, free_length):
    """docs/MODEL_FORMAT.md, "Short contexts": the window path and both stepper paths agree for every
    context length 1..window, whichever graphs a model has."""
    path = build_model(tmp_path, window=8, step=step, free_length=free_length, seed=5)
    meta = json.loads(path.read_text())
    meta["loop_cache"] = {"weight": 0.5, "decay": 0.9}  # as the shipped model plays: half the loop cache
    path.write_text(json.dumps(meta))
    model = Model.load(path, provider="cpu")
    assert model.has_step_graph == step and model.free_length == free_length
    context = np.tile(_windows(1, 3, seed=6)[0], 3)[: model.window]  # a loop, so the cache votes
    assert max(_short_context_differences(model, context)) < 1e-5
    if free_length and step:
        # two separate graphs, one reading: the window graph on L tokens is the step graph from zero state
        for length in range(1, model.window + 1):
            direct = model._run_window(context[None, :length])[0]
            assert np.abs(direct - model._read_from_zero(context[None, :length])[0][0]).max() < 1e-5
    if not free_length and not step:
        # the one exception, documented: a fixed-length window graph alone reads a short context repeated
        short = context[:3]
        assert list(repeat_to_window(short[None, :], 8)[0]) == [*short[1:], *short, *short]
        network = model._run_window(repeat_to_window(short[None, :], 8))[0]
        assert np.allclose(model.window_probs(short[None, :], cache=False)[0], network)
