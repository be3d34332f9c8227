"""A stand-in model for engine unit tests: deterministic, instant, no ONNX.

The fake predicts "the vocabulary token after the last one" (one-hot), so with temperature 0 the
engine's choices are predictable: after tokens ``[.., i]`` the model plays ``i + 1``. With
``uniform=True`` every token is equally likely instead, so a seeded sampler picks varied tokens.
:func:`grid_model` is a grid-token fake whose next token follows a table of what came last.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from lofi_live.tokens import rules as token_rules

VOCABULARY = ["C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5", "0.4.7", "9.0.4", "2.5.9", "7.11.2"]


class FakeStepper:
    def __init__(self, model: "FakeModel"):
        self.model = model
        self.window = model.window
        self.resets = 0
        self.advances = 0
        self.history: list[int] = []

    def _probs(self, last: int) -> np.ndarray:
        if self.model.delay:
            time.sleep(self.model.delay)
        if self.model.follow is not None:
            return self._follow()
        if self.model.uniform:
            return np.full(len(self.model.vocabulary), 1 / len(self.model.vocabulary), np.float32)
        probs = np.full(len(self.model.vocabulary), 1e-6, np.float32)
        probs[(last + 1) % len(self.model.vocabulary)] = 1.0
        return probs / probs.sum()

    def _follow(self) -> np.ndarray:
        """One-hot on the table's answer to the last two tokens, else to the last one."""
        vocabulary = self.model.vocabulary
        tokens = [vocabulary[i] for i in self.history[-2:]]
        nxt = self.model.follow.get(" ".join(tokens)) or self.model.follow[tokens[-1]]
        probs = np.full(len(vocabulary), 1e-6, np.float32)
        probs[vocabulary.index(nxt)] = 1.0
        return probs / probs.sum()

    def reset(self, window: Sequence[int]) -> np.ndarray:
        self.resets += 1
        self.model.seen.append(list(window))
        self.history = [int(i) for i in window]
        return self._probs(int(window[-1]))

    def advance(self, token: int) -> np.ndarray:
        self.advances += 1
        self.history.append(int(token))
        return self._probs(int(token))


class FakeModel:
    provider = "cpu"

    def __init__(self, vocabulary: Sequence[str] = VOCABULARY, window: int = 32, delay: float = 0.0,
                 uniform: bool = False, name: str = "fake", tokens: str = "seed",
                 follow: dict[str, str] | None = None):
        self.name, self.uniform, self.tokens, self.follow = name, uniform, tokens, follow
        self.vocabulary = list(vocabulary)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}
        self.window = window
        self.delay = delay
        self.seen: list[list[int]] = []
        self.steppers: list[FakeStepper] = []

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index[token_rules.nearest_token(t, self.vocabulary)] for t in tokens]

    def stepper(self) -> FakeStepper:
        stepper = FakeStepper(self)
        self.steppers.append(stepper)
        return stepper


#: A grid vocabulary: notes, chords, hold and rest.
GRID_VOCABULARY = ["C4", "D4", "E4", "F4", "G4", "0.4.7", "9.0.4", token_rules.HOLD, token_rules.REST]


def grid_model(follow: dict[str, str], window: int = 32) -> FakeModel:
    """A grid-token fake: after the tokens ``"a b"`` (else ``"b"``) it plays ``follow[...]``."""
    return FakeModel(GRID_VOCABULARY, window=window, name="grid-fake", tokens="grid", follow=follow)


class PositionStepper(FakeStepper):
    """The stepper of a model that reads bar positions and has a copy gate: records what it was given."""

    def __init__(self, model: "FakeModel"):
        super().__init__(model)
        self.positions: list[int | None] = []  # one per token read, in order
        self.variation: float | None = None
        self.variations: list[float | None] = []  # the variation at each prediction

    def reset(self, window: Sequence[int], positions: Sequence[int] | None = None) -> np.ndarray:
        self.positions += list(positions) if positions is not None else [None] * len(window)
        self.variations.append(self.variation)
        return super().reset(window)

    def advance(self, token: int, position: int | None = None) -> np.ndarray:
        self.positions.append(position)
        self.variations.append(self.variation)
        return super().advance(token)


def position_model(follow: dict[str, str]) -> FakeModel:
    """A grid-token fake (:func:`grid_model`) that reads bar positions and has a copy gate."""
    model = grid_model(follow)
    model.uses_position = True
    model.has_copy_gate = True
    model.stepper = lambda: model.steppers.append(PositionStepper(model)) or model.steppers[-1]
    return model
