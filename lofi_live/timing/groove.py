"""Swing and dynamics: where the model's grid steps sound, and how loud its notes are.

The model thinks on the straight 0.5-beat grid (its tokens are one per step); these rules only
decide how the steps it plays sound, live (``lofi-live run``) and in files (``lofi-live generate``).

Swing (``--swing PCT``, the MPC's and Ableton's groove pool convention)
    The off-beat eighth (an odd grid step) lies ``PCT`` % of the way through its beat: 50 is straight,
    66 the triplet feel, 75 a dotted-eighth feel. 66 is the MPC's name for the triplet itself
    (Roger Linn: 50, 54, 58, 62, 66 "perfect triplet", 71, 75), so it means exactly 2/3 of the beat.
    Between grid points time is stretched piecewise linearly (the first half of a beat to
    ``[0, PCT]``, the second to ``[PCT, 1]``), so a note that ends on the off-beat ends on the
    swung off-beat and durations follow the onsets. Played notes are un-swung with the inverse
    (:meth:`Swing.straight`) before they are tokenized, so a musician playing swung lands on their
    own step: a 75 % off-beat, or a 66 % one played 0.1 beat late, is near straight beat 0.5, where the
    plain nearest-step rule would give it to the next step.

Dynamics (:class:`Dynamics`)
    The model plays at the dynamics of what was just played: the median velocity of the player's
    last phrase (at most its last :data:`PHRASE_NOTES` note-ons; a phrase begins with a note-on
    after the player was silent), :data:`DEFAULT_VELOCITY` before anything was played; ``--velocity``
    sets a fixed level instead. Notes on the beat (even steps) get a light accent of
    :data:`ACCENT` velocity steps.

Humanize (:class:`Humanize`, ``--humanize``)
    Seeded (``--seed``), so a run or a file can be made again: every note's velocity moves by up to
    :data:`HUMANIZE_VELOCITY`, and every step's onset by up to :data:`HUMANIZE_MS` ms, never more
    than a quarter of the gap to the neighbouring sounded step, so a note never crosses into another
    step (and still tokenizes to its own).
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from typing import Sequence

from lofi_live.midi.files import NoteEvent
from lofi_live.tokens.grid import onset_step
from lofi_live.tokens.rules import GRID_BEATS

#: The accepted range of ``--swing``: straight to a dotted-eighth feel.
SWING_RANGE = (50.0, 75.0)
#: The MPC's triplet setting and the position it stands for.
TRIPLET_PCT, TRIPLET = 66.0, 2.0 / 3.0
#: The model's velocity before the player played anything (and the old fixed default).
DEFAULT_VELOCITY = 90
#: Velocity steps added to the model's notes on the beat (even grid steps).
ACCENT = 8
#: Played note-ons a phrase's dynamics are taken from (the last ones).
PHRASE_NOTES = 16
#: ``--humanize``: the most a note's velocity and a step's onset move.
HUMANIZE_VELOCITY = 6
HUMANIZE_MS = 4.0


def swing_fraction(pct: float) -> float:
    """Where the off-beat eighth lies in its beat (0.5 = straight); 66 is the triplet, 2/3."""
    if not SWING_RANGE[0] <= pct <= SWING_RANGE[1]:
        raise ValueError(f"--swing {pct:g}: must be in {SWING_RANGE[0]:g}..{SWING_RANGE[1]:g} "
                         "(50 = straight, 66 = triplet feel)")
    return TRIPLET if pct == TRIPLET_PCT else pct / 100.0


class Swing:
    """Maps beats of the straight grid to the beats they sound at (:meth:`sounded`) and back (:meth:`straight`)."""

    def __init__(self, pct: float = 50.0):
        self.pct = pct
        self.fraction = swing_fraction(pct)

    def sounded(self, beat: float) -> float:
        """The beat a straight-grid ``beat`` sounds at: the off-beat moves to ``fraction`` of its beat."""
        whole = beat // 1
        part = beat - whole
        if part <= 0.5:
            return whole + part * 2 * self.fraction
        return whole + self.fraction + (part - 0.5) * 2 * (1 - self.fraction)

    def straight(self, beat: float) -> float:
        """The inverse of :meth:`sounded`: a played (swung) beat on the straight grid, for tokenizing."""
        whole = beat // 1
        part = beat - whole
        if part <= self.fraction:
            return whole + part / (2 * self.fraction)
        return whole + 0.5 + (part - self.fraction) / (2 * (1 - self.fraction))

    def step_beat(self, step: int) -> float:
        """The beat grid step ``step`` sounds at."""
        return self.sounded(step * GRID_BEATS)

    def step_gap(self) -> float:
        """The shortest distance between two sounded steps, in beats."""
        return min(self.fraction, 1 - self.fraction)


class Humanize:
    """Seeded variation of velocity and timing; ``enabled`` False gives none (the same calls, no change)."""

    def __init__(self, enabled: bool, seed: int | None):
        self.enabled = enabled
        self.random = random.Random(seed)

    def velocity(self, velocity: int) -> int:
        """``velocity`` moved by up to :data:`HUMANIZE_VELOCITY` (kept in 1..127)."""
        if self.enabled:
            velocity += self.random.randint(-HUMANIZE_VELOCITY, HUMANIZE_VELOCITY)
        return max(1, min(127, velocity))

    def offset_beats(self, bpm: float, swing: Swing) -> float:
        """A step's onset offset, in beats: up to :data:`HUMANIZE_MS`, and under a quarter of the
        shortest gap between sounded steps, so no note crosses into a neighbouring step."""
        if not self.enabled:
            return 0.0
        limit = min(HUMANIZE_MS / 1000.0 * bpm / 60.0, swing.step_gap() / 4)
        return self.random.uniform(-limit, limit)


class Dynamics:
    """The model's velocity: the player's last phrase (median), or ``fixed``; accented on the beat."""

    def __init__(self, fixed: int | None, humanize: Humanize):
        self.fixed = fixed
        self.humanize = humanize
        self.phrase: deque[int] = deque(maxlen=PHRASE_NOTES)

    def played(self, velocity: int, new_phrase: bool) -> None:
        """A played note-on; ``new_phrase``: the player had been silent, so the last phrase is over."""
        if new_phrase:
            self.phrase.clear()
        self.phrase.append(velocity)

    def level(self) -> int:
        """The level the model plays at now, before accent and humanize."""
        if self.fixed is not None:
            return self.fixed
        if not self.phrase:
            return DEFAULT_VELOCITY
        return int(round(statistics.median(self.phrase)))

    def velocity(self, step: int) -> int:
        """One note's velocity at grid ``step``: the level, accented on the beat, humanized."""
        accent = ACCENT if step % 2 == 0 else 0
        return self.humanize.velocity(self.level() + accent)


class Groove:
    """Swing, dynamics and humanize together, for notes written to a file (``lofi-live generate``)."""

    def __init__(self, swing: Swing, dynamics: Dynamics, humanize: Humanize):
        self.swing, self.dynamics, self.humanize = swing, dynamics, humanize

    def notes(self, notes: Sequence[NoteEvent], bpm: float) -> list[NoteEvent]:
        """Notes on the straight step grid (as tokens describe them) -> the notes as they sound.

        Each step's onset is swung and humanized once, and a note ends where the step it ends on
        sounds, so a note ending where the next begins still ends exactly there (no overlap of a
        re-struck pitch). Each note gets its own velocity (accented on the beat, humanized)."""
        offsets: dict[int, float] = {}

        def sounded(step: int) -> float:  # never before the file's start
            if step not in offsets:
                offsets[step] = self.humanize.offset_beats(bpm, self.swing)
            return max(0.0, self.swing.step_beat(step) + offsets[step])

        played = []
        for note in sorted(notes):
            first = onset_step(note.start)  # the one beat -> step rule (ties late, never banker's rounding)
            last = onset_step(note.start + note.duration)
            start = sounded(first)
            played.append(NoteEvent(start, sounded(last) - start, note.pitch, self.dynamics.velocity(first),
                                    note.channel))
        return played
