"""Incremental next-token prediction on a loaded model: the step graph's state, or the window graph.

The engine and ``generate`` ask for one token after another. :class:`Stepper` carries the LSTM states of
the step graph (one small graph run per token, re-synced from the last window so it never drifts from
what the model learnt); :class:`WindowStepper` serves a model without a step graph by running the
window graph on the context every step. Both read a short context the way ``docs/MODEL_FORMAT.md``
defines it, through :meth:`lofi_live.model.loader.Model.window_probs` where they need the window graph.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np

#: The loaded model a stepper runs (a :class:`lofi_live.model.loader.Model`, which imports this module).
Model = Any


def repeat_to_window(contexts: np.ndarray, window: int) -> np.ndarray:
    """Short contexts ``(N, L)`` repeated whole, then cut to their last ``window`` tokens.

    Only for a model whose window graph takes exactly ``window`` tokens and that has no step graph
    (exports before short contexts were defined): it cannot read a short context as it is, and a
    repeated phrase is the nearest thing to it in a loop instrument. Both predictors of such a model
    go through :meth:`Model.window_probs`, so they agree.
    """
    length = contexts.shape[1]
    return np.tile(contexts, (1, -(-window // length)))[:, -window:]


class Stepper:
    """Stateful next-token prediction through the step graph: one small graph run per token.

    Short contexts. Until ``window`` tokens have been fed (a fresh stepper, or :meth:`reset` with fewer
    tokens) the primary state has read exactly the tokens fed, from zero state: the answer of
    :meth:`Model.window_probs` on those tokens (docs/MODEL_FORMAT.md, "Short contexts").

    Long runs. The model was trained on windows of at most ``window`` tokens fed from zero state, so a
    state carried for ever drifts away from what it learnt. The stepper therefore keeps two states in
    one batch-2 run: the *primary* state, whose prediction is returned, and a *shadow* state started
    from zero. Every ``window`` advances the shadow has read exactly the last ``window`` tokens from zero
    state; it becomes the primary (its prediction at that step equals the window graph's on those
    tokens) and a new shadow starts from zero. So the context is re-synced from the last ``window``
    tokens every ``window`` advances, without the latency spike of replaying the window, and once it is
    full always spans between ``window`` and ``2 * window - 1`` tokens. :meth:`reset` rebuilds both from
    a context. (A step graph exported with a fixed batch of 1 runs the two states one after the other.)
    """

    def __init__(self, model: Model):
        self.model = model
        self.window = model.window
        self._session = model._step_session
        self._outputs = model._step_outputs
        self._paired = model._step_batch_fixed != 1
        rows = 2 if self._paired else 1
        shape, dtype = model._input_spec(rows, 1)
        self._token = np.zeros(shape, dtype)
        self._names = [name for name, _ in model.states]
        self._state = {name: np.zeros((rows, units), np.float32) for name, units in model.states}
        if not self._paired:
            self._shadow = {name: np.zeros((1, units), np.float32) for name, units in model.states}
        self._feeds = {model._step_in: self._token, **self._state}
        self._size = len(model.vocabulary)
        self._history: deque[int] = deque(maxlen=self.window)
        self._since_sync = 0
        self.probs = np.full(self._size, 1.0 / self._size, np.float32)

    def _set_token(self, token: int) -> None:
        if not 0 <= token < self._size:
            raise ValueError(f"token index {token} outside the vocabulary (0..{self._size - 1})")
        # Model.feed: the window graph's encoding, so both graphs see bit-identical inputs
        self._token[...] = self.model.feed(np.full(self._token.shape[:2], token))

    def _run(self, feeds: dict) -> list:
        return self._session.run(self._outputs, feeds)

    #: a model without a copy gate has nothing for ``--variation`` to move: the value is kept and unused
    variation: float | None = None

    def reset(self, window: Sequence[int], positions: Sequence[int] | None = None) -> np.ndarray:
        """Rebuild the state from a context (read from zero state); returns the next-token probabilities.

        A context shorter than the model's window is read as it is; a longer one is cut to its last tokens.
        ``positions`` are accepted for the interface of :class:`lofi_live.model.pointer.PointerStepper` and
        unused: this model reads no bar positions.
        """
        tokens = [int(t) for t in window][-self.window :]
        if not tokens:
            raise ValueError("reset needs at least one token")
        if any(not 0 <= t < self._size for t in tokens):
            raise ValueError(f"token index outside the vocabulary (0..{self._size - 1})")
        probs, states = self.model._read_from_zero(np.array([tokens], np.int64))
        for name, value in zip(self._names, states):
            self._state[name][0] = value[0]
            if self._paired:
                self._state[name][1] = 0.0  # the shadow row starts from zero now
            else:
                self._shadow[name][...] = 0.0
        self._history.clear()
        self._history.extend(tokens)
        self._since_sync = 0
        self.probs = self.model.loop_cache.mix(probs[0], self._history)
        return self.probs

    def advance(self, token: int, position: int | None = None) -> np.ndarray:
        """Feed one token index and carry the state; returns the next-token probabilities ``(V,)``
        (``position`` is unused: this model reads no bar positions)."""
        token = int(token)
        self._set_token(token)
        self._history.append(token)
        self._since_sync += 1
        if self._paired:
            outputs = self._run(self._feeds)
            state = self._state
            resync = self._since_sync >= self.window
            for name, value in zip(self._names, outputs[1:]):
                if resync:
                    state[name][0] = value[1]
                    state[name][1] = 0.0
                else:
                    state[name][...] = value
            self.probs = outputs[0][1] if resync else outputs[0][0]
        else:
            outputs = self._run(self._feeds)
            shadow = self._run({self.model._step_in: self._token, **self._shadow})
            resync = self._since_sync >= self.window
            for name, value, ghost in zip(self._names, outputs[1:], shadow[1:]):
                self._state[name][...] = ghost if resync else value
                self._shadow[name][...] = 0.0 if resync else ghost
            self.probs = shadow[0][0] if resync else outputs[0][0]
        if resync:
            self._since_sync = 0
        self.probs = self.model.loop_cache.mix(self.probs, self._history)
        return self.probs

    @property
    def history(self) -> list[int]:
        """The last ``window`` tokens fed (from :meth:`reset` and :meth:`advance`)."""
        return list(self._history)


class WindowStepper:
    """The :class:`Stepper` interface for a model without a step graph: the window graph every step.

    The context is the last ``window`` tokens fed, as they are (shorter at first), predicted by
    :meth:`Model.window_probs`'s own rule, so both paths give the same answer for every context.
    """

    def __init__(self, model: Model):
        self.model = model
        self.window = model.window
        self._size = len(model.vocabulary)
        self._history: deque[int] = deque(maxlen=self.window)
        self.probs = np.full(self._size, 1.0 / self._size, np.float32)

    def _predict(self) -> np.ndarray:
        context = np.array([self._history], np.int64)
        self.probs = self.model.loop_cache.mix(self.model._network_probs(context)[0], self._history)
        return self.probs

    #: kept and unused, as :attr:`Stepper.variation`
    variation: float | None = None

    def reset(self, window: Sequence[int], positions: Sequence[int] | None = None) -> np.ndarray:
        """Use the last ``window`` tokens of a context (a short one as it is); returns the next-token probabilities
        (``positions`` unused: this model reads no bar positions)."""
        tokens = [int(t) for t in window][-self.window :]
        if not tokens:
            raise ValueError("reset needs at least one token")
        if any(not 0 <= t < self._size for t in tokens):
            raise ValueError("token index outside the vocabulary")
        self._history.clear()
        self._history.extend(tokens)
        return self._predict()

    def advance(self, token: int, position: int | None = None) -> np.ndarray:
        token = int(token)
        if not 0 <= token < self._size:
            raise ValueError(f"token index {token} outside the vocabulary (0..{self._size - 1})")
        self._history.append(token)
        return self._predict()

    @property
    def history(self) -> list[int]:
        return list(self._history)
