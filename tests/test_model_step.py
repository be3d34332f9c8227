"""The step graph reproduces the window graph; the stepper re-syncs its context every window."""

from __future__ import annotations

import numpy as np
import pytest

from lofi_live.model import Model, Stepper, WindowStepper
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


def test_between_resyncs_the_context_is_longer_but_close(model):
    stepper = model.stepper()
    history = list(_windows(1, model.window, seed=4)[0])
    stepper.reset(history)
    for token in (1, 2, 3):
        history.append(token)
        probs = stepper.advance(token)
    expected = model.window_probs(np.array([history[-model.window:]]))[0]
    assert np.abs(probs - expected).max() < 0.5  # same model, a few tokens more context


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


def test_encode_maps_unknown_tokens(model):
    encoded = model.encode(["C4", "C#7", "0.4.7.10", "not-a-token", "E4"])
    assert len(encoded) == 4  # the malformed token is skipped
    assert encoded[0] == model.index["C4"] and encoded[-1] == model.index["E4"]
    assert model.vocabulary[encoded[1]] in VOCABULARY
    assert model.vocabulary[encoded[2]] == "0.4.7"  # nearest: one pitch class apart
