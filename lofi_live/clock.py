"""Time -> beats -> 0.5-beat grid steps: the internal tempo and MIDI beat-clock following.

Two clocks with one vocabulary (times are ``time.perf_counter()`` seconds, beats are quarter notes):

* :class:`InternalClock` (``--bpm``): beat 0 is the start time; grid step ``n`` happens at
  ``anchor_time + (n * 0.5 - anchor_beat) * 60 / bpm``. Every grid time is computed from the anchor,
  never by adding intervals, so nothing drifts; a tempo change re-anchors at the current beat.
* :class:`MidiClock` (``--clock midi``): follows a DAW's MIDI beat clock: 24 ticks per quarter note,
  Start (0xFA: the next tick is beat 0), Stop (0xFC), Continue (0xFB: the next tick continues the
  position) and Song Position Pointer (0xF2: position in 16th notes = 6 ticks, the next tick is that
  position). A grid step is 12 ticks: the tick whose count is a multiple of 12 *is* the grid boundary.
  The tempo is estimated from the intervals of the last 24 ticks (median, so one late tick does not
  move it); it sets gate lengths and interpolates beats between ticks for recording played notes.
  Ticks without Start are counted for the tempo only.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from lofi_live.tokens import GRID_BEATS

#: MIDI beat clock resolution: ticks per quarter note.
PPQN = 24
#: Ticks per 0.5-beat grid step.
TICKS_PER_STEP = int(PPQN * GRID_BEATS)
#: Ticks per Song Position Pointer unit (a 16th note).
TICKS_PER_SPP = 6


def step_beat(step: int) -> float:
    """The beat of grid step ``step``."""
    return step * GRID_BEATS


class InternalClock:
    """A steady tempo from a start time; grid times are computed, never accumulated."""

    source = "internal"

    def __init__(self, bpm: float):
        if not 20 <= bpm <= 400:
            raise ValueError(f"tempo {bpm} BPM outside 20..400")
        self.bpm = float(bpm)
        self.anchor_time = 0.0
        self.anchor_beat = 0.0
        self.running = False

    def start(self, now: float) -> None:
        """Beat 0 is at ``now``."""
        self.anchor_time, self.anchor_beat, self.running = now, 0.0, True

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    def beat_at(self, now: float) -> float:
        return self.anchor_beat + (now - self.anchor_time) * self.bpm / 60.0

    def time_of_beat(self, beat: float) -> float:
        return self.anchor_time + (beat - self.anchor_beat) * 60.0 / self.bpm

    def step_time(self, step: int) -> float:
        """When grid step ``step`` starts."""
        return self.time_of_beat(step_beat(step))

    def set_bpm(self, bpm: float, now: float) -> None:
        """Change the tempo from ``now`` on: the beat reached at ``now`` stays where it is."""
        bpm = min(400.0, max(20.0, float(bpm)))
        self.anchor_beat = self.beat_at(now)
        self.anchor_time = now
        self.bpm = bpm


@dataclass(frozen=True)
class ClockEvent:
    """What one clock message meant: ``kind`` is start, stop, continue, position or boundary."""

    kind: str
    step: int | None = None
    time: float = 0.0


class MidiClock:
    """Follows MIDI beat clock messages (fed with their arrival times)."""

    source = "midi"

    def __init__(self, default_bpm: float = 120.0):
        self.default_bpm = float(default_bpm)
        self.running = False
        self.tick = -1  # count of the last tick received since Start/SPP; the next tick is tick + 1
        self.last_tick_time: float | None = None
        self._intervals: deque[float] = deque(maxlen=PPQN)
        self.ticks_without_start = 0
        self.started_once = False

    # -- tempo ------------------------------------------------------------------------------

    @property
    def bpm(self) -> float:
        """The tempo estimated from recent tick intervals (the default before any ticks)."""
        if len(self._intervals) < 3:
            return self.default_bpm
        interval = statistics.median(self._intervals)
        return min(400.0, max(20.0, 60.0 / (interval * PPQN)))

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    def beat_at(self, now: float) -> float:
        """The beat at ``now``: the last tick plus the time since it (at most one tick ahead)."""
        if self.last_tick_time is None or self.tick < 0:
            return max(self.tick, 0) / PPQN
        if not self.running:
            return self.tick / PPQN
        fraction = (now - self.last_tick_time) / (self.seconds_per_beat / PPQN)
        return (self.tick + min(max(fraction, 0.0), 1.0)) / PPQN

    def next_boundary_time(self, now: float) -> float | None:
        """A prediction of the next grid boundary's time (None when stopped)."""
        if not self.running or self.last_tick_time is None:
            return None
        ticks_left = TICKS_PER_STEP - ((self.tick % TICKS_PER_STEP) if self.tick >= 0 else 0)
        return self.last_tick_time + ticks_left * self.seconds_per_beat / PPQN

    # -- messages ---------------------------------------------------------------------------

    def handle(self, kind: str, now: float, pos: int = 0) -> ClockEvent | None:
        """Feed one message type (``clock``, ``start``, ``stop``, ``continue``, ``songpos``)."""
        if kind == "clock":
            if self.last_tick_time is not None:
                interval = now - self.last_tick_time
                if 0.0005 < interval < 0.25:  # between 400 and 10 BPM; a gap after a stop is no tempo
                    self._intervals.append(interval)
            self.last_tick_time = now
            if not self.running:
                self.ticks_without_start += 1
                return None
            self.tick += 1
            if self.tick % TICKS_PER_STEP == 0:
                return ClockEvent("boundary", self.tick // TICKS_PER_STEP, now)
            return None
        if kind == "start":
            self.running, self.tick, self.started_once = True, -1, True
            return ClockEvent("start", 0, now)
        if kind == "stop":
            was = self.running
            self.running = False
            return ClockEvent("stop", None, now) if was else None
        if kind == "continue":
            self.running, self.started_once = True, True
            return ClockEvent("continue", (self.tick + TICKS_PER_STEP) // TICKS_PER_STEP, now)
        if kind == "songpos":
            self.tick = int(pos) * TICKS_PER_SPP - 1
            return ClockEvent("position", (self.tick + 1) // TICKS_PER_STEP, now)
        return None
