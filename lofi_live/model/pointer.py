"""Models that copy from their window: the copy gate, ``--variation``, and the pointer step predictor.

A model whose JSON has a ``pointer`` section (the ``lstm-pointer`` preset, docs/MODEL_FORMAT.md) gives
its prediction in parts: a vocabulary softmax, a copy distribution (attention over the window proposing
the token that followed each earlier step) and the gate its own sentinel chose between them. The
runtime mixes them here, which is where a musician's ``--variation`` acts:

* ``variation`` None (or 0.5): the network's own gate ``g``, exactly the trained prediction;
* below 0.5 the vocabulary's share ``w`` falls linearly from ``g`` to 0 (``w = 2 v g``): at 0 the window is
  copied only, the loop replayed;
* above 0.5 it rises linearly from ``g`` to 1 (``w = g + (2 v - 1)(1 - g)``): at 1 the vocabulary softmax alone
  plays, freely.

So the knob is continuous and monotone, always moves from where the network itself stands, and each half
moves the share evenly: the network usually copies most of a loop (``g`` small), and a mapping through the
gate's odds would leave most of the knob's travel near "copy" and jump near 1.

When nothing can be copied yet (the first token of a context) the copy part is empty and the vocabulary
softmax is used whatever the variation.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np

from lofi_live.tokens.grid import STEPS_PER_BAR, bar_positions

#: The loaded model a pointer stepper runs (a :class:`lofi_live.model.loader.Model`, which imports this module).
Model = Any

#: The head's outputs, in every pointer graph: the mixture, the vocabulary softmax, the copy mass, the gate.
POINTER_OUTPUTS = ("probs", "vocab_probs", "copy_probs", "gate")
#: The window graph's outputs a reset reads: the head's, every step's key, the state after the last token.
WINDOW_OUTPUTS = [*POINTER_OUTPUTS, "keys", "h0_out", "c0_out"]
#: The step graph's inputs besides the states.
STEP_INPUTS = ("token", "position", "keys", "nexts", "valid")
#: Copy mass below this counts as nothing to copy.
EMPTY = 1e-6


def check_variation(variation: float | None) -> float | None:
    """A variation in [0, 1], or None (the network's own gate); anything else is a ValueError."""
    if variation is None:
        return None
    value = float(variation)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"variation must be between 0 and 1, not {variation}")
    return value


def vocabulary_share(gate: np.ndarray, variation: float | None) -> np.ndarray:
    """The vocabulary softmax's share of the mixture: ``gate`` at 0.5 (or None), linear to 0 at 0 and to 1 at 1."""
    gate = np.asarray(gate, np.float64)
    if variation is None:
        return gate
    if variation <= 0.5:
        return 2.0 * variation * gate
    return gate + (2.0 * variation - 1.0) * (1.0 - gate)


def mix(vocab_probs: np.ndarray, copy_probs: np.ndarray, gate: np.ndarray, variation: float | None) -> np.ndarray:
    """Next-token probabilities ``[..., V]`` from the head's parts under a variation (module docstring)."""
    gate = np.asarray(gate, np.float64)[..., None]
    mass = 1.0 - gate
    if variation is None:
        return (gate * vocab_probs + copy_probs).astype(np.float32)
    share = vocabulary_share(gate, variation)
    copied = np.where(mass > EMPTY, copy_probs / np.maximum(mass, EMPTY), vocab_probs)
    share = np.where(mass > EMPTY, share, 1.0)
    return (share * vocab_probs + (1.0 - share) * copied).astype(np.float32)


def default_positions(count: int) -> list[int]:
    """Positions of a context given without them: its first token on a downbeat."""
    return bar_positions(count, 0)


class PointerStepper:
    """Incremental prediction through a pointer model's step graph: one small graph run per token.

    The step graph carries the LSTM state and reads a cache of the last ``window - 1`` steps' keys, each
    with the token that followed it. Two rows run as one batch, as in :class:`lofi_live.model.steppers.Stepper`:
    the *primary* (whose prediction is returned) and a *shadow* started from zero state and an empty cache.
    Every ``window`` advances the shadow has read exactly the last ``window`` tokens, its answer is the
    window graph's on them, and it becomes the primary; a new shadow starts. Until then, a context of
    ``L <= window`` tokens read by :meth:`reset` gives exactly :meth:`Model.window_probs` on it.

    ``variation`` (None or 0..1) may be set at any time; it applies from the next prediction
    (:func:`mix`). ``positions`` are bar positions 0-7; one left out continues the bar from the last.
    """

    def __init__(self, model: Model):
        self.model = model
        self.window = model.window
        self._session = model._step_session
        pointer = model.pointer
        self._units, self._key_dim, self._cache = pointer["units"], pointer["key_dim"], self.window - 1
        self._size = len(model.vocabulary)
        self._outputs = [*POINTER_OUTPUTS, "h0_out", "c0_out", "key"]
        self._history: deque[int] = deque(maxlen=self.window)
        self._position = STEPS_PER_BAR - 1
        self._variation: float | None = None
        # two rows (primary, shadow): LSTM state, the cache ring, the key waiting for its next token
        self._h = np.zeros((2, self._units), np.float32)
        self._c = np.zeros((2, self._units), np.float32)
        self._keys = np.zeros((2, self._cache, self._key_dim), np.float32)
        self._nexts = np.zeros((2, self._cache), np.int32)
        self._valid = np.zeros((2, self._cache), np.float32)
        self._pending = np.zeros((2, self._key_dim), np.float32)
        self._has_pending = [False, False]
        self._slot = [0, 0]
        self._since_sync = 0
        self.parts: tuple[np.ndarray, np.ndarray, float] | None = None
        self.probs = np.full(self._size, 1.0 / self._size, np.float32)

    def _clear(self, row: int) -> None:
        """Zero state and an empty cache for one row."""
        self._h[row] = self._c[row] = 0.0
        self._keys[row] = 0.0
        self._nexts[row] = 0
        self._valid[row] = 0.0
        self._has_pending[row] = False
        self._slot[row] = 0

    @property
    def variation(self) -> float | None:
        return self._variation

    @variation.setter
    def variation(self, value: float | None) -> None:
        self._variation = check_variation(value)

    def _check(self, token: int) -> int:
        token = int(token)
        if not 0 <= token < self._size:
            raise ValueError(f"token index {token} outside the vocabulary (0..{self._size - 1})")
        return token

    def _step(self, token: int, position: int, rows: int) -> list[np.ndarray]:
        """Run ``rows`` rows (1: the primary alone, 2: both) on one token, caching the pending keys first."""
        for row in range(rows):
            if self._has_pending[row]:
                slot = self._slot[row]
                self._keys[row, slot], self._nexts[row, slot], self._valid[row, slot] = self._pending[row], token, 1.0
                self._slot[row] = (slot + 1) % self._cache
        feeds = {"token": np.full((rows, 1), token, np.int32), "position": np.full((rows, 1), position, np.int32),
                 "h0": self._h[:rows], "c0": self._c[:rows], "keys": self._keys[:rows],
                 "nexts": self._nexts[:rows], "valid": self._valid[:rows]}
        out = self._session.run(self._outputs, feeds)
        self._h[:rows], self._c[:rows], self._pending[:rows] = out[4], out[5], out[6]
        for row in range(rows):
            self._has_pending[row] = True
        return out

    def _answer(self, out: list[np.ndarray], row: int) -> np.ndarray:
        self.parts = (out[1][row], out[2][row], float(out[3][row]))
        self.probs = self.model.loop_cache.mix(mix(out[1][row], out[2][row], out[3][row], self._variation),
                                               self._history)
        return self.probs

    def reset(self, window: Sequence[int], positions: Sequence[int] | None = None) -> np.ndarray:
        """Read a context from zero state and an empty cache (its last ``window`` tokens); returns the next-token
        probabilities. ``positions`` default to a bar starting at the context's first token."""
        tokens = [self._check(t) for t in window]
        steps = list(positions) if positions is not None else default_positions(len(tokens))
        if len(steps) != len(tokens):
            raise ValueError(f"{len(steps)} positions for {len(tokens)} tokens")
        tokens, steps = tokens[-self.window:], [int(p) % STEPS_PER_BAR for p in steps[-self.window:]]
        if not tokens:
            raise ValueError("reset needs at least one token")
        self._clear(0)
        self._clear(1)
        self._since_sync = 0
        self._history.clear()
        self._history.extend(tokens)
        # one window graph run gives the answer, every step's key and the state after the last token
        out = self.model._window_session.run(WINDOW_OUTPUTS, {"tokens": np.array([tokens], np.int32),
                                                              "positions": np.array([steps], np.int32)})
        keys = out[4][0]
        filled = len(tokens) - 1  # the last step's key waits for the next token
        self._keys[0, :filled], self._nexts[0, :filled], self._valid[0, :filled] = keys[:-1], tokens[1:], 1.0
        self._slot[0] = filled % self._cache
        self._pending[0], self._has_pending[0] = keys[-1], True
        self._h[0], self._c[0] = out[5][0], out[6][0]
        self._position = steps[-1]
        return self._answer(out, 0)

    def advance(self, token: int, position: int | None = None) -> np.ndarray:
        """Feed one token (at ``position`` in the bar, default: the step after the last) and return the
        next-token probabilities ``(V,)``."""
        token = self._check(token)
        self._position = (self._position + 1) % STEPS_PER_BAR if position is None else int(position) % STEPS_PER_BAR
        self._history.append(token)
        out = self._step(token, self._position, 2)
        self._since_sync += 1
        if self._since_sync < self.window:
            return self._answer(out, 0)
        answer = self._answer(out, 1)  # the shadow has read exactly the last `window` tokens: it takes over
        for array in (self._h, self._c, self._keys, self._nexts, self._valid, self._pending):
            array[0] = array[1]
        self._has_pending[0], self._slot[0] = self._has_pending[1], self._slot[1]
        self._clear(1)
        self._since_sync = 0
        return answer

    @property
    def history(self) -> list[int]:
        """The last ``window`` tokens fed (from :meth:`reset` and :meth:`advance`)."""
        return list(self._history)


def _names(nodes: Sequence) -> list[str]:
    return [node.name for node in nodes]


def check_window_graph(model: Model, where, session) -> None:
    """A position model's window graph: inputs ``tokens`` and ``positions``, the head's outputs for a copy gate."""
    from lofi_live.errors import LofiError

    inputs = _names(session.get_inputs())
    if sorted(inputs) != ["positions", "tokens"]:
        raise LofiError(f"{where}: window graph inputs are {inputs}, a model with bar positions needs tokens and positions")
    outputs = _names(session.get_outputs())
    wanted = WINDOW_OUTPUTS if model.has_copy_gate else ["probs"]
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise LofiError(f"{where}: window graph lacks outputs {', '.join(missing)}")


def check_step_graph(model: Model, where, session) -> None:
    """A pointer model's step graph: the inputs and outputs of docs/MODEL_FORMAT.md, and one step that answers."""
    from lofi_live.errors import LofiError

    inputs = sorted(_names(session.get_inputs()))
    expected = sorted([*STEP_INPUTS, *(name for name, _ in model.states)])
    if inputs != expected:
        raise LofiError(f"{where}: step graph inputs are {inputs}, the JSON says {expected}")
    outputs = _names(session.get_outputs())
    missing = [n for n in (*POINTER_OUTPUTS, "h0_out", "c0_out", "key") if n not in outputs]
    if missing:
        raise LofiError(f"{where}: step graph lacks outputs {', '.join(missing)}")
    try:
        probs = PointerStepper(model).advance(0)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises several types on a graph of the wrong shape
        raise LofiError(f"{where}: the step graph does not run ({str(error).splitlines()[0][:160]})") from None
    if probs.shape != (len(model.vocabulary),):
        raise LofiError(f"{where}: step output size {probs.shape[-1]} differs from the vocabulary size "
                        f"{len(model.vocabulary)}")
