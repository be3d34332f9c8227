"""The shared step timeline: played notes -> one token per grid step, the model's tokens beside them,
and the window the model reads.

Played notes -> tokens
    A played note belongs to the nearest grid step (:func:`lofi_live.tokens.grid.onset_step`: a note
    a little early still counts for the step it anticipates). A step closes half a step (a quarter
    beat) after its boundary, when no later note can still belong to it; its token is made then.
    A token the model does not know becomes the nearest known one (``Model.encode``).

Swing
    Notes come in at the beats they sounded at. With ``--swing`` the played off-beats lie late, so
    each beat is first un-swung (:meth:`lofi_live.timing.groove.Swing.straight`, here and nowhere else)
    and then given to the nearest step: a musician playing swung lands on their own step, and the
    model's own swung notes on the steps it played them for.

Two tokenizations, as the model records (``Model.tokens``):

* ``seed`` (:class:`OnsetSteps`): only steps with onsets make tokens, the notes of one step give
  one token (a lone note its pitch token ``C4``, several a chord token, ``tokens.onset_token``).
  The model's own token enters the timeline when it is sent, a played token when its step closes.
* ``grid`` (:class:`GridSteps`): every step makes one token, whoever played: the grid rule
  (:func:`lofi_live.tokens.grid.step_token`) applied to everything that sounded, player's and
  model's, as in training data whose tracks are merged: the step's onsets give an onset token,
  else ``hold`` when a note begun at an earlier step still sounds a quarter step (0.125 beat) into
  the step, else ``rest``. So a held chord is an onset then holds, silence is rests, and the model
  hearing the player over its own held chord hears the merged chord. Nothing enters before the first
  note (or the seed); the silence before a response enters as rests, at most
  :data:`lofi_live.tokens.grid.MAX_RESTS` in a row (:meth:`Timeline.append`), like the corpus.

Window
    The model sees the last ``window`` tokens of the timeline. A token the model computed but did
    not play never enters it.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from lofi_live.tokens import rules as token_rules
from lofi_live.timing.clock import step_beat
from lofi_live.timing.groove import Swing
from lofi_live.tokens.grid import HOLD_PROBE_BEATS, onset_step, step_token
from lofi_live.tokens.rules import GRID_BEATS


def close_beat(step: int) -> float:
    """When step ``step``'s token is made: half a step after its boundary, the last beat a note
    can still belong to it (an onset at or after it is nearer the next step)."""
    return step_beat(step) + GRID_BEATS / 2


class OnsetSteps:
    """Seed tokens: played note-ons grouped by grid step; a step with onsets gives one onset token.

    Beats are the ones notes sounded at; ``swing`` un-swings them onto the straight grid. Engine thread only.
    """

    def __init__(self, swing: Swing | None = None) -> None:
        self.swing = swing or Swing()
        self.pending: dict[int, list[int]] = {}

    def note_on(self, key: tuple[int, int], beat: float) -> int:
        step = onset_step(self.swing.straight(beat))
        self.pending.setdefault(step, []).append(key[-1])
        return step

    def note_off(self, key: tuple[int, int], beat: float) -> None:
        """Onsets only: a release makes no token."""

    def close_due(self, beat: float) -> list[tuple[int, str, str]]:
        """``(step, "player", token)`` of every step closed by ``beat``, in step order (the model's
        seed tokens enter the timeline when sent, not here)."""
        if not self.pending:
            return []
        beat = self.swing.straight(beat)
        done = sorted(step for step in self.pending if close_beat(step) <= beat)
        return [(step, "player", token_rules.onset_token(self.pending.pop(step))) for step in done]

    def clear(self) -> None:
        self.pending.clear()


class GridSteps:
    """Grid tokens: every note that sounds (keyed ``(part, channel, pitch)``) -> one token per step.

    The player's notes come from the input, the model's from what the engine strikes and releases;
    :meth:`close_due` gives every step from the first onset on, one after the other, with who played
    it: ``model`` for the steps the model played (:meth:`model_played`), else ``player``. Beats are the
    ones notes sounded at; ``swing`` un-swings them onto the straight grid. Engine thread only.
    """

    def __init__(self, swing: Swing | None = None) -> None:
        self.swing = swing or Swing()
        self.onsets: dict[int, list[int]] = {}
        self.sounding: dict[tuple, int] = {}  # key -> onset step of the note
        self.ended: list[tuple[int, float]] = []  # (onset step, end beat) of released notes
        self.next_step: int | None = None  # the next step to close; None until something sounded
        self.model_steps: set[int] = set()  # steps the model played, not yet closed

    def note_on(self, key: tuple, beat: float) -> int:
        step = onset_step(self.swing.straight(beat))
        self.onsets.setdefault(step, []).append(key[-1])
        if key in self.sounding:  # a re-strike ends the sounding one
            self.note_off(key, beat)
        self.sounding[key] = step
        if self.next_step is None or step < self.next_step:
            self.next_step = step
        return step

    def model_played(self, step: int) -> None:
        """The model played step ``step`` (its notes are told with :meth:`note_on`): the step is the
        model's, and steps close from it on even if nothing sounds (a hold or a rest)."""
        self.model_steps.add(step)
        if self.next_step is None:
            self.next_step = step

    def note_off(self, key: tuple, beat: float) -> None:
        step = self.sounding.pop(key, None)
        if step is not None:
            self.ended.append((step, self.swing.straight(beat)))

    def close_due(self, beat: float) -> list[tuple[int, str, str]]:
        """``(step, part, token)`` of every step closed by ``beat``, in step order."""
        found = []
        beat = self.swing.straight(beat)
        while self.next_step is not None and close_beat(self.next_step) <= beat:
            step = self.next_step
            probe = step_beat(step) + HOLD_PROBE_BEATS
            sounding = any(began < step for began in self.sounding.values()) or any(
                began < step and end > probe for began, end in self.ended
            )
            part = "model" if step in self.model_steps else "player"
            self.model_steps.discard(step)
            found.append((step, part, step_token(self.onsets.pop(step, ()), sounding)))
            self.ended = [(began, end) for began, end in self.ended if end > probe]
            self.next_step = step + 1
        return found

    def clear(self) -> None:
        """Forget what sounded and stop closing steps (MIDI Start: the count begins again)."""
        self.onsets.clear()
        self.sounding.clear()
        self.ended.clear()
        self.model_steps.clear()
        self.next_step = None


@dataclass
class Entry:
    step: int
    part: str  # "player", "model" or "seed"
    token: str
    index: int


class Timeline:
    """The shared, append-only list of player and model tokens; the model sees the last ``window``.

    ``max_rests`` (grid models): a rest after that many rests in a row is not appended. Owned by the
    responder (engine thread); the inference thread gets copies of the window in its jobs.
    """

    def __init__(self, window: int = 32, keep: int = 512, max_rests: int | None = None):
        self.window = window
        self.max_rests = max_rests
        self.entries: deque[Entry] = deque(maxlen=keep)
        self.count = 0  # tokens ever appended (absolute position of the end)
        self._rests = 0

    def append(self, step: int, part: str, token: str, index: int) -> bool:
        """Add one token; False when it is a rest beyond ``max_rests`` in a row (not added)."""
        if token == token_rules.REST:
            self._rests += 1
            if self.max_rests is not None and self._rests > self.max_rests:
                return False
        else:
            self._rests = 0
        self.entries.append(Entry(step, part, token, index))
        self.count += 1
        return True

    def window_indices(self) -> list[int]:
        return [entry.index for entry in list(self.entries)[-self.window :]]

    def window_tokens(self) -> list[str]:
        return [entry.token for entry in list(self.entries)[-self.window :]]

    def tokens(self, part: str | None = None, last: int | None = None) -> list[str]:
        """The tokens (of ``part``), the ``last`` ones only when given."""
        if last and part is None:
            return [e.token for e in itertools.islice(self.entries, max(0, len(self.entries) - last), None)]
        found = [e.token for e in self.entries if part is None or e.part == part]
        return found[-last:] if last else found

    def reencode(self, indices: Iterable[int]) -> None:
        """Give the last entries new indices (model_select: the new model's vocabulary)."""
        indices = list(indices)
        for entry, index in zip(list(self.entries)[-len(indices) :] if indices else [], indices):
            entry.index = index

    def __len__(self) -> int:
        return len(self.entries)
