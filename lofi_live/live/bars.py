"""Where the bar line is, live: the position in its 4/4 bar (0-7, 8 steps of half a beat) of every grid step.

A model that reads the bar position beside each token needs it live as it gets it from files. The
live engine numbers grid steps from its clock's start; where beat 1 of a bar falls depends on the clock:

* internal clock with ``--metronome``: the metronome's bar. It accents every 8th step from step 0
  (beat 0 is the engine's start), so step ``s`` is at ``s % 8``;
* internal clock without it: nothing says where the bar is until the player plays. As a looper pedal
  does, the player's first onset, snapped to the grid (:func:`lofi_live.tokens.grid.onset_step`), is
  beat 1 of a bar, and every step is counted from it (steps before it count back from it);
* ``--clock midi``: the DAW's song position. Start is bar 1, beat 1 (step 0), and a Song Position
  Pointer counts sixteenths from there, so the step numbers the engine takes from them are song
  steps: step ``s`` is at ``s % 8`` (a song in 4/4 from its start);
* ``--clock link``: the session's phase at quantum 4. A step whose session beat has phase ``p``
  (0 <= p < 4) is at ``round(p / 0.5) % 8``; the engine's beat 0 is a session bar line (the Link
  clock counts from the bar line at or before its start, and a jump of the session's beat keeps that
  origin), so there too step ``s`` is at ``s % 8``.

In continue mode the answer starts on a bar line: the first one at or after the step the wait ends
on (:meth:`BarGrid.answer_start`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lofi_live.tokens.grid import STEPS_PER_BAR, bar_positions, onset_step
from lofi_live.tokens.rules import GRID_BEATS

#: The clocks the engine knows (``--clock``).
SOURCES = ("internal", "midi", "link")
#: Beats per bar at which Link aligns phase (:data:`lofi_live.timing.link.QUANTUM`, without importing the binding).
LINK_QUANTUM = 4.0


def link_position(phase: float) -> int:
    """The bar position of a step whose session beat has phase ``phase`` at quantum 4 (0 <= phase < 4)."""
    return round((phase % LINK_QUANTUM) / GRID_BEATS) % STEPS_PER_BAR


@dataclass
class BarGrid:
    """The bar line of one run: ``downbeat`` is a step at beat 1 of a bar, None while it is not known
    (internal clock without metronome, before the player's first onset)."""

    downbeat: int | None = None

    @classmethod
    def for_clock(cls, source: str, metronome: bool = False) -> BarGrid:
        """The bar line a clock gives from the start: step 0, except the internal clock without a
        metronome, which waits for the player's first onset (:meth:`first_onset`)."""
        if source not in SOURCES:
            raise ValueError(f"unknown clock {source!r} (one of {', '.join(SOURCES)})")
        return cls(None if source == "internal" and not metronome else 0)

    @classmethod
    def from_link_phase(cls, step: int, phase: float) -> BarGrid:
        """The bar line from the Link session: grid step ``step``'s session beat has phase ``phase``."""
        return cls(step - link_position(phase))

    @property
    def known(self) -> bool:
        return self.downbeat is not None

    def first_onset(self, beat: float) -> bool:
        """The player's onset at ``beat`` (engine beats): when no bar line is known yet, its grid step
        becomes beat 1 of a bar (looper-pedal rule). Returns whether it set the bar line."""
        if self.downbeat is not None:
            return False
        self.downbeat = onset_step(beat)
        return True

    def position(self, step: int) -> int | None:
        """Grid step ``step``'s position in its bar (0-7), None while the bar line is not known."""
        if self.downbeat is None:
            return None
        return (step - self.downbeat) % STEPS_PER_BAR

    def positions(self, first: int, count: int) -> list[int] | None:
        """The positions of ``count`` steps from ``first`` on (None while the bar line is not known)."""
        start = self.position(first)
        return None if start is None else bar_positions(count, start)

    def answer_start(self, step: int) -> int:
        """The first bar line at or after ``step`` (the step the wait ends on): where an answer in
        continue mode starts. With no bar line known, ``step`` itself."""
        position = self.position(step)
        if position is None or position == 0:
            return step
        return step + STEPS_PER_BAR - position
