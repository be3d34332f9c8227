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

from dataclasses import dataclass
from typing import Protocol

from lofi_live.timing.source_clock import SourceClockFollower
from lofi_live.tokens.rules import GRID_BEATS, check_bpm, clamp_bpm

#: MIDI beat clock resolution: ticks per quarter note.
PPQN = 24
#: Ticks per 0.5-beat grid step.
TICKS_PER_STEP = int(PPQN * GRID_BEATS)
#: Ticks per Song Position Pointer unit (a 16th note).
TICKS_PER_SPP = 6
#: A grid step is announced when a tick this close before it arrives (so a lost tick before it, or
#: its own, does not delay it).
ANNOUNCE_TICKS = 2
#: A step announced ahead is sent when its own tick arrives, or this fraction of a tick period after
#: that tick was due when it has not arrived by then (it was lost). Sending at the due time itself
#: would put the step early whenever the server delivers the clock late (a stall shifts every later
#: tick); waiting for the tick keeps the step on it, a lost tick costs this much lateness.
LATE_TICK_GRACE = 0.15


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
    """What one clock message meant: ``kind`` is start, stop, continue, position, boundary (step
    ``step`` is due at ``time``), arrived (its tick came) or retime (a step announced ahead is now
    due at ``time``: the count it was announced on was taken back). ``frame``: for a boundary or retime, the same
    time on JACK's sample clock, when the follower counts by it (a step whose tick has not come waits
    for the server to reach it: a stalled server sends no ticks)."""

    kind: str
    step: int | None = None
    time: float = 0.0
    frame: float | None = None


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
    """Follows MIDI beat clock messages (fed with their arrival times, and on JACK their frame times)
    through a :class:`~lofi_live.timing.source_clock.SourceClockFollower`.

    The follower says which tick each arrival is (a copy, the next one, or the next after lost ones);
    this class turns that into the song position (Start, Continue and Song Position Pointer set it
    exactly: the next tick *is* that position, whatever the follower thought of the gap) and grid
    steps. A step is announced twice at most: once ahead, when a tick :data:`ANNOUNCE_TICKS` or fewer
    before it arrives, for :data:`LATE_TICK_GRACE` of a period after the follower's line says its
    tick is due (a ``boundary`` event in the future, the latest it is sent); and when its own tick
    arrives (``arrived``), which sends it then. So a step is sent with its tick, and that grace late
    when its tick is lost; when its tick and the two before it are all lost, it is sent when the next
    tick shows the loss (late, but still in its place)."""

    source = "midi"

    def __init__(self, default_bpm: float = 120.0):
        self.default_bpm = float(default_bpm)
        self.position = MidiPosition(self.default_bpm)
        self.follower = SourceClockFollower(60.0 / self.default_bpm / PPQN)
        self.ticks_without_start = 0
        self.started_once = False
        self._exact = False  # the next tick is position tick + 1 exactly (after Start, Continue, SPP)
        self._announced = -1  # the last step announced since Start (or the one before a Continue/SPP position)

    # -- readings (from the published position) ---------------------------------------------

    @property
    def bpm(self) -> float:
        """The tempo the follower measured (the default before any ticks)."""
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

    @property
    def duplicates(self) -> int:
        """Ticks delivered twice (each copy counted once)."""
        return self.follower.duplicates

    @property
    def lost(self) -> int:
        """Ticks that never arrived (counted from the gaps they left)."""
        return self.follower.lost

    def beat_at(self, now: float) -> float:
        """The beat at ``now``: the last tick plus the time since it (at most one tick ahead)."""
        return self.position.beat_at(now)

    # -- messages ---------------------------------------------------------------------------

    def _bpm(self) -> float:
        return clamp_bpm(60.0 / (self.follower.period * PPQN))

    def _publish(self, tick: int, last_tick_time: float | None, running: bool) -> None:
        self.position = MidiPosition(self._bpm(), tick, last_tick_time, running)

    def _set_position(self, tick: int, running: bool, last_tick_time: float | None) -> None:
        """The next tick is ``tick + 1`` exactly; the steps up to it count as announced."""
        self._exact = True
        self._announced = tick // TICKS_PER_STEP
        self._publish(tick, last_tick_time, running)

    def handle(self, kind: str, now: float, pos: int = 0, frame: float | None = None) -> ClockEvent | None:
        """Feed one message type (``clock``, ``start``, ``stop``, ``continue``, ``songpos``); a tick's
        ``frame`` is its arrival by JACK's sample clock, when known (the follower counts by it)."""
        old = self.position
        if kind == "clock":
            return self._tick(now, frame)
        if kind == "start":
            self.started_once = True
            self._set_position(-1, True, old.last_tick_time)
            return ClockEvent("start", 0, now)
        if kind == "stop":
            self._publish(old.tick, old.last_tick_time, False)
            return ClockEvent("stop", None, now) if old.running else None
        if kind == "continue":
            self.started_once = True
            self._set_position(old.tick, True, old.last_tick_time)
            return ClockEvent("continue", (old.tick + TICKS_PER_STEP) // TICKS_PER_STEP, now)
        if kind == "songpos":
            tick = int(pos) * TICKS_PER_SPP - 1
            self._set_position(tick, old.running, old.last_tick_time)
            return ClockEvent("position", (tick + 1) // TICKS_PER_STEP, now)
        return None

    def _tick(self, now: float, frame: float | None) -> ClockEvent | None:
        reading = self.follower.feed(now, frame)
        if reading.duplicate:
            return None
        old = self.position
        if not old.running:
            self.ticks_without_start += 1
            self._publish(old.tick, now, False)
            return None
        tick = old.tick + 1 + (0 if self._exact else reading.lost - reading.taken_back)
        self._exact = False
        self._publish(tick, now, True)
        step = tick // TICKS_PER_STEP
        if reading.taken_back and step < self._announced and tick % TICKS_PER_STEP:
            # announced on a count since taken back: due when the corrected count reaches it
            ahead = TICKS_PER_STEP - tick % TICKS_PER_STEP
            return ClockEvent("retime", self._announced, now + (ahead + LATE_TICK_GRACE) * self.follower.period)
        if step > self._announced:  # its tick (or one after it) arrived before any announcement
            self._announced = step
            return ClockEvent("boundary", step, now)
        if tick % TICKS_PER_STEP == 0:  # announced ahead: it may be sent now if that is sooner
            return ClockEvent("arrived", step, now)
        ahead = TICKS_PER_STEP - tick % TICKS_PER_STEP
        due = self.follower.due(ahead) if ahead <= ANNOUNCE_TICKS else None
        if due is None:
            return None
        grace = LATE_TICK_GRACE * self.follower.period
        latest = max(due + grace, now)
        on_frames = self.follower.due_frame(ahead)
        frame = None if on_frames is None else on_frames + grace
        if step + 1 > self._announced:
            self._announced = step + 1
            return ClockEvent("boundary", step + 1, latest, frame)
        # announced a tick ago: the line now knows this tick too (after a stall, when it came later)
        return ClockEvent("retime", step + 1, latest, frame)
