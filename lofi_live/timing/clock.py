"""Time -> beats -> 0.5-beat grid steps: the internal tempo, MIDI beat-clock following, Ableton Link.

Three clocks with one vocabulary (times are ``time.perf_counter()`` seconds, beats are quarter notes;
:class:`Clock` is what the engine, the voices and the view read from any of them):

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
* :class:`lofi_live.timing.link.LinkClock` (``--clock link``): the Link session's timeline (tempo, bar
  phase with quantum 4, start/stop), refreshed by the engine thread; grid times are computed from it
  as from the internal clock's anchor (both are a :class:`GridClock`: the grid is known ahead).

Threads. A clock is changed only by the engine thread; the main thread (journal flushes) and the view
read it. Every reading comes from one immutable snapshot (:class:`Tempo` for the internal clock,
:class:`MidiPosition` for the MIDI clock) that a change replaces in one assignment, so a reader never
sees a new tempo with an old anchor (a half-updated beat in the journal). The Link clock publishes a
:class:`lofi_live.timing.link.LinkTimeline` the same way.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from lofi_live.tokens.rules import GRID_BEATS, check_bpm, clamp_bpm

#: MIDI beat clock resolution: ticks per quarter note.
PPQN = 24
#: Ticks per 0.5-beat grid step.
TICKS_PER_STEP = int(PPQN * GRID_BEATS)
#: Ticks per Song Position Pointer unit (a 16th note).
TICKS_PER_SPP = 6


class Clock(Protocol):
    """What is read from every clock (from its immutable snapshot, so from any thread)."""

    source: str  # internal | midi | link

    @property
    def bpm(self) -> float: ...

    @property
    def running(self) -> bool: ...

    @property
    def seconds_per_beat(self) -> float: ...

    def beat_at(self, now: float) -> float: ...


class TempoMap(Protocol):
    """One immutable snapshot of a tempo: :class:`Tempo`, or the Link clock's ``LinkTimeline``."""

    bpm: float

    def beat_at(self, now: float) -> float: ...

    def time_of_beat(self, beat: float) -> float: ...


class GridClock(Clock, Protocol):
    """A clock that knows the grid ahead (internal, Link): the engine computes every boundary's time
    from it and spins to it. Only the engine thread calls ``start``, ``poll`` and ``set_bpm``."""

    def start(self, now: float) -> int:
        """Begin counting at ``now``; returns the first grid step to play."""
        ...

    def poll(self, now: float) -> ClockEvent | None:
        """Catch up with what moves the clock from outside: a start, a stop or a jump of the beat."""
        ...

    def time_of_beat(self, beat: float) -> float:
        """When ``beat`` is due (the engine asks only while ``running``)."""
        ...

    def set_bpm(self, bpm: float, now: float) -> TempoMap:
        """A new tempo from ``now`` on, the beat at ``now`` kept; returns the new snapshot."""
        ...


def step_beat(step: int) -> float:
    """The beat of grid step ``step``."""
    return step * GRID_BEATS


@dataclass(frozen=True)
class Tempo:
    """The internal clock's state as one value: ``bpm`` from ``anchor_beat`` at ``anchor_time`` on."""

    bpm: float
    anchor_time: float = 0.0
    anchor_beat: float = 0.0
    running: bool = False

    def beat_at(self, now: float) -> float:
        return self.anchor_beat + (now - self.anchor_time) * self.bpm / 60.0

    def time_of_beat(self, beat: float) -> float:
        return self.anchor_time + (beat - self.anchor_beat) * 60.0 / self.bpm


class InternalClock:
    """A steady tempo from a start time; grid times are computed, never accumulated."""

    source = "internal"

    def __init__(self, bpm: float):
        self.tempo = Tempo(check_bpm(bpm))

    def start(self, now: float) -> int:
        """Beat 0 is at ``now``; the first step is 0."""
        self.tempo = Tempo(self.tempo.bpm, now, 0.0, True)
        return 0

    def poll(self, now: float) -> ClockEvent | None:  # noqa: ARG002 - nothing outside moves this clock
        return None

    @property
    def bpm(self) -> float:
        return self.tempo.bpm

    @property
    def running(self) -> bool:
        return self.tempo.running

    @property
    def anchor_time(self) -> float:
        return self.tempo.anchor_time

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.tempo.bpm

    def beat_at(self, now: float) -> float:
        return self.tempo.beat_at(now)

    def time_of_beat(self, beat: float) -> float:
        return self.tempo.time_of_beat(beat)

    def step_time(self, step: int) -> float:
        """When grid step ``step`` starts."""
        return self.tempo.time_of_beat(step_beat(step))

    def set_bpm(self, bpm: float, now: float) -> Tempo:
        """Change the tempo from ``now`` on (the beat reached at ``now`` stays where it is); returns
        the new snapshot, published in one assignment."""
        old = self.tempo
        self.tempo = Tempo(clamp_bpm(bpm), now, old.beat_at(now), old.running)
        return self.tempo


@dataclass(frozen=True)
class ClockEvent:
    """What one clock message meant: ``kind`` is start, stop, continue, position or boundary."""

    kind: str
    step: int | None = None
    time: float = 0.0


@dataclass(frozen=True)
class MidiPosition:
    """The MIDI clock's state as one value: the last tick's count and time, the tempo, running."""

    bpm: float
    tick: int = -1  # count of the last tick received since Start/SPP; the next tick is tick + 1
    last_tick_time: float | None = None
    running: bool = False

    def beat_at(self, now: float) -> float:
        """The beat at ``now``: the last tick plus the time since it (at most one tick ahead)."""
        if self.last_tick_time is None or self.tick < 0:
            return max(self.tick, 0) / PPQN
        if not self.running:
            return self.tick / PPQN
        fraction = (now - self.last_tick_time) / (60.0 / self.bpm / PPQN)
        return (self.tick + min(max(fraction, 0.0), 1.0)) / PPQN


class MidiClock:
    """Follows MIDI beat clock messages (fed with their arrival times)."""

    source = "midi"

    def __init__(self, default_bpm: float = 120.0):
        self.default_bpm = float(default_bpm)
        self.position = MidiPosition(self.default_bpm)
        self._intervals: deque[float] = deque(maxlen=PPQN)
        self.ticks_without_start = 0
        self.started_once = False

    # -- readings (from the published position) ---------------------------------------------

    @property
    def bpm(self) -> float:
        """The tempo estimated from recent tick intervals (the default before any ticks)."""
        return self.position.bpm

    @property
    def tick(self) -> int:
        return self.position.tick

    @property
    def running(self) -> bool:
        return self.position.running

    @property
    def last_tick_time(self) -> float | None:
        return self.position.last_tick_time

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.position.bpm

    def beat_at(self, now: float) -> float:
        """The beat at ``now``: the last tick plus the time since it (at most one tick ahead)."""
        return self.position.beat_at(now)

    def next_boundary_time(self, now: float) -> float | None:
        """A prediction of the next grid boundary's time (None when stopped)."""
        position = self.position
        if not position.running or position.last_tick_time is None:
            return None
        ticks_left = TICKS_PER_STEP - ((position.tick % TICKS_PER_STEP) if position.tick >= 0 else 0)
        return position.last_tick_time + ticks_left * 60.0 / position.bpm / PPQN

    # -- messages ---------------------------------------------------------------------------

    def _estimate_bpm(self) -> float:
        if len(self._intervals) < 3:
            return self.default_bpm
        interval = statistics.median(self._intervals)
        return clamp_bpm(60.0 / (interval * PPQN))

    def _publish(self, tick: int, last_tick_time: float | None, running: bool) -> None:
        self.position = MidiPosition(self._estimate_bpm(), tick, last_tick_time, running)

    def handle(self, kind: str, now: float, pos: int = 0) -> ClockEvent | None:
        """Feed one message type (``clock``, ``start``, ``stop``, ``continue``, ``songpos``)."""
        old = self.position
        if kind == "clock":
            if old.last_tick_time is not None:
                interval = now - old.last_tick_time
                # 0.5 ms to 250 ms a tick is 5000 to 10 BPM (the estimate is then held to 20..400);
                # the gap after a Stop is no tempo
                if 0.0005 < interval < 0.25:
                    self._intervals.append(interval)
            if not old.running:
                self.ticks_without_start += 1
                self._publish(old.tick, now, False)
                return None
            tick = old.tick + 1
            self._publish(tick, now, True)
            if tick % TICKS_PER_STEP == 0:
                return ClockEvent("boundary", tick // TICKS_PER_STEP, now)
            return None
        if kind == "start":
            self.started_once = True
            self._publish(-1, old.last_tick_time, True)
            return ClockEvent("start", 0, now)
        if kind == "stop":
            self._publish(old.tick, old.last_tick_time, False)
            return ClockEvent("stop", None, now) if old.running else None
        if kind == "continue":
            self.started_once = True
            self._publish(old.tick, old.last_tick_time, True)
            return ClockEvent("continue", (old.tick + TICKS_PER_STEP) // TICKS_PER_STEP, now)
        if kind == "songpos":
            tick = int(pos) * TICKS_PER_SPP - 1
            self._publish(tick, old.last_tick_time, old.running)
            return ClockEvent("position", (tick + 1) // TICKS_PER_STEP, now)
        return None
