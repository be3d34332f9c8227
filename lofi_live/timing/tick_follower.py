"""Locks to a MIDI beat clock's phase, so that a tick delivered twice, a tick lost or a jittery one
cannot move the count off the DAW's grid.

Counting every clock byte goes wrong in three ways that USB interfaces, busy DAWs and JACK all show:
a tick delivered twice counts one tick too many, a lost tick one too few, and from then on every
step lands a tick away from the DAW's. The follower instead keeps a line through the recent ticks
(least squares, time against count, over the last :data:`WINDOW` accepted ticks): its slope is the
tick period, and it says when the next tick is due. Each arriving tick is then read against both the
line (its *phase error*: how far, in periods, it is from when the next tick was due) and the interval
since the previous tick:

* **duplicate**: it comes less than :data:`DUPLICATE_FRACTION` of a period after the previous tick
  (a copy arrives within a millisecond or two; a tick jittered by a quarter period is still half a
  period away): counted, and ignored;
* **lost ticks**: the phase error is at least :data:`LOST_PHASE` of a period, the interval at least
  :data:`LOST_INTERVAL` periods, and the two together at least :data:`LOST_EVIDENCE` periods: both the
  line and the last interval must point to a missing tick, so a tick jittered late after one jittered
  early (an interval of 1.5 periods, a phase error of a quarter) is never read as a loss; the number
  lost is the phase error rounded;
* **the previous tick was late**: after a tick read as following lost ones, this one comes half a
  period or more before the next count is due (so about when the count just given was due): the
  previous tick was held back on the way (a busy server delivers a tick late now and then), not the
  next after a loss; its lost ticks are taken back and this tick is the next one;
* **a stall, read as a loss**: a server that stalls delays every later tick by the same time (the
  clock went on from where it was), which a single tick cannot tell from a loss. So a loss is
  weighed again :data:`CONFIRM_TICKS` ticks later: after a loss the ticks go on where the line
  before it said (their phase errors average about 0, whatever the jitter); after a stall they all
  come early on that line, counted with the loss. When the mean phase error of the tick read as
  following the loss and the ticks after it is early by :data:`STALL_SPREADS` times the spread of
  the line's ticks (their jitter) and by at least :data:`STALL_SHIFT` of a period, the lost ticks are
  taken back and the line starts again from the last ticks. (A stall of nearly a whole period still
  reads as a loss: by time the two are the same stream.)
* **a sudden slow-down**: when :data:`SLOWDOWN_TICKS` of the last :data:`SLOWDOWN_WINDOW` ticks each
  seemed to follow lost ones, the DAW slowed down by more than a third at once (no transport loses
  most ticks for long): the lost ticks counted for them are taken back, the line starts again;
* otherwise it is the next tick. When its phase error is still half a period or more, in the same
  direction, at two ticks in a row, the DAW changed tempo faster than the line follows: the line
  starts again from this tick and the one before (*relock*), so the next tick is already predicted
  at the new tempo. (One tick that far off is one held back on the way: a busy server does that.)

On JACK each tick also comes with its arrival by the server's sample clock (``frame``: the frame
time of the process cycle it came in, :mod:`lofi_live.midi.input_reader`), and the line then runs on
that clock. The DAW places its ticks by it, and a server that stalls (a loaded machine: measured on
JACK's dummy server, stalls of up to a whole period every few minutes) delays every later cycle in
wall time but not on it: by frame time a stall is no loss at all, and a lost tick still leaves its
gap. :meth:`TickFollower.due` answers in wall time (the line's prediction plus the last tick's wall
time less its frame time), because steps are sent by wall time. (A source timed by the system clock
is the other way round: :mod:`lofi_live.timing.source_clock` counts with a follower on each clock.)

Jitter of up to a quarter period therefore never moves the count. While the line is young (fewer
than :data:`LOCK_TICKS` ticks since the follower began or relocked) its period is too uncertain to
tell a lost tick from jitter: every tick then counts one, and only a copy within 30 % of a period
(or 2 ms before there is any interval) is a duplicate. A silence longer than :data:`MAX_LOST` ticks is
no loss but a pause (the DAW stopped sending): the follower relocks and counts the next tick as one.

The follower only counts; :class:`lofi_live.timing.clock.MidiClock` turns counts into song positions
(Start, Continue and Song Position Pointer set them exactly) and grid steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Ticks the line is fitted over.
WINDOW = 16
#: Ticks after a (re)lock during which every tick counts one (the period is not yet known well enough).
LOCK_TICKS = 8
#: A tick this soon after the previous one (a fraction of the period) is a copy of it.
DUPLICATE_FRACTION = 0.35
#: The same while locking (the period may still be 50 % off).
LOCKING_DUPLICATE_FRACTION = 0.3
#: Before there is any interval: a copy within this many seconds.
DUPLICATE_SECONDS = 0.002
#: Lost ticks need a phase error of at least this many periods (a lost tick with a quarter period of
#: jitter is 0.75 to 1.25 late on the line; a tick held back on the way, the stream shifted by a
#: stall of the server, is anything from 0) ...
LOST_PHASE = 0.6
#: ... an interval of at least this many periods ...
LOST_INTERVAL = 1.4
#: ... and phase error plus the interval's excess over one period of at least this many periods.
LOST_EVIDENCE = 1.1
#: A loss is weighed again over the tick read as following it and this many ticks after it ...
CONFIRM_TICKS = 2
#: ... and taken back when their mean phase error is early by this many times the spread of the
#: ticks about the line (their jitter: a mean that early is no chance) ...
STALL_SPREADS = 4.0
#: ... and by at least this fraction of a period.
STALL_SHIFT = 0.15
#: A gap of more ticks than this is a pause, not lost ticks (one beat).
MAX_LOST = 24
#: When this many of the last :data:`SLOWDOWN_WINDOW` accepted ticks each seemed to follow lost ones,
#: the DAW slowed down at once by more than half (no transport loses most ticks for long).
SLOWDOWN_TICKS = 4
SLOWDOWN_WINDOW = 6


@dataclass
class Doubt:
    """A loss being weighed: the count before it, the line then (the last count's time, the period),
    and the phase errors on that line of the tick read as following the loss and of those since."""

    before: int
    at_before: float
    period: float
    spread: float  # the jitter: the standard deviation of the line's ticks about it, in periods
    errors: list[float]

    def error(self, count: int, now: float) -> float:
        """Tick ``count`` arriving at ``now``, in periods from where the line before the loss puts it."""
        return (now - self.at_before - (count - self.before) * self.period) / self.period


@dataclass(frozen=True)
class TickReading:
    """What one arriving tick was: a copy of the previous one, or the next tick after ``lost`` lost ones."""

    duplicate: bool = False
    lost: int = 0
    taken_back: int = 0  # lost ticks counted before, now known to have been a slower tempo


class TickFollower:
    """Counts MIDI clock ticks by their phase (fed with arrival times, one caller thread)."""

    def __init__(self, period: float):
        self._period = float(period)  # the last estimate: kept across a relock
        self._history: deque[tuple[int, float]] = deque(maxlen=WINDOW)  # (count, arrival time)
        self.count = -1  # the last accepted tick's count since the follower began
        self.duplicates = 0
        self.lost = 0
        self._recent: deque[int] = deque(maxlen=SLOWDOWN_WINDOW)  # lost ticks counted at each recent accepted tick
        self._drift = 0  # +1 / -1: the last accepted tick was half a period or more late / early on the line
        self._doubt: Doubt | None = None  # the last loss, while it is weighed
        self._by_frames = False  # the line runs on JACK's sample clock (else on arrival times)
        self._wall_offset = 0.0  # the last tick's arrival time less its time on the line's clock

    # -- the line ----------------------------------------------------------------------------

    def _fit(self) -> tuple[float, float] | None:
        """(time of the last count, period) of the least-squares line, or None below 3 ticks."""
        history = self._history
        n = len(history)
        if n < 3:
            return None
        last = history[-1][0]
        xs = [count - last for count, _ in history]
        ys = [when for _, when in history]
        mean_x, mean_y = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
        return mean_y - slope * mean_x, slope

    def _spread(self, fit: tuple[float, float]) -> float:
        """How far the line's ticks lie from it (standard deviation, in periods)."""
        at_last, period = fit
        last = self._history[-1][0]
        squares = [((when - at_last - (count - last) * period) / period) ** 2 for count, when in self._history]
        return (sum(squares) / max(len(squares) - 2, 1)) ** 0.5

    @property
    def period(self) -> float:
        """Seconds per tick: the line's slope (the last estimate while fewer than 3 ticks are known)."""
        return self._period

    @property
    def locked(self) -> bool:
        """Whether the line is old enough to count lost ticks."""
        return len(self._history) >= LOCK_TICKS

    def due(self, ahead: int = 1) -> float | None:
        """When the tick ``ahead`` counts after the last accepted one is due, by the line (None before 3 ticks)."""
        fit = self._fit()
        if fit is None:
            return None
        at_last, period = fit
        return at_last + ahead * period + self._wall_offset

    def line(self) -> tuple[int, float, float] | None:
        """(the last accepted count, its time on the line, the period), on the clock the line runs on
        (None below 3 ticks)."""
        fit = self._fit()
        return None if fit is None else (self._history[-1][0], fit[0], fit[1])

    def due_frame(self, ahead: int = 1) -> float | None:
        """The same on JACK's sample clock, when the line runs on it (else None)."""
        fit = self._fit() if self._by_frames else None
        if fit is None:
            return None
        at_last, period = fit
        return at_last + ahead * period

    # -- ticks -------------------------------------------------------------------------------

    def relock(self) -> None:
        """Forget the line (a pause, a jump of the tempo); the period estimate is kept."""
        self._history.clear()
        self._drift = 0
        self._doubt = None

    def feed(self, now: float, frame: float | None = None) -> TickReading:
        """One tick arrived at ``now`` (``frame``: the same by JACK's sample clock, when known): what it
        was. Accepted ticks advance :attr:`count`."""
        history = self._history
        by_frames = frame is not None
        if frame is not None:
            offset = now - frame
            if history and self._by_frames and abs(offset - self._wall_offset) > MAX_LOST * self._period:
                self.relock()  # the two clocks parted by more than a beat: a new JACK server counts from 0
            now, self._wall_offset = frame, offset
        else:
            self._wall_offset = 0.0
        if history and by_frames != self._by_frames:
            self.relock()  # the sample clock came or went (the JACK server went away): a line on one clock only
        self._by_frames = by_frames
        if not history:
            return self._accept(now, 0)
        gap = now - history[-1][1]
        fit = self._fit()
        period = fit[1] if fit is not None else self._period
        if len(history) < 2:
            if gap < DUPLICATE_SECONDS:
                return self._duplicate()
            return self._accept(now, 0)
        if gap < (DUPLICATE_FRACTION if self.locked else LOCKING_DUPLICATE_FRACTION) * period:
            return self._duplicate()
        if gap > (MAX_LOST + 1.5) * period:  # a pause: the line no longer says where the DAW is
            self.relock()
            return self._accept(now, 0)
        error = (now - (fit[0] + period)) / period if fit is not None else 0.0
        if self._recent and self._recent[-1] and error <= -0.5:
            return self._late_previous(now, min(self._recent[-1], round(-error)))
        lost = 0
        if self.locked and error >= LOST_PHASE and gap >= LOST_INTERVAL * period and error + gap / period - 1 >= LOST_EVIDENCE:
            lost = round(error)
            error -= lost
        if lost and sum(1 for each in self._recent if each) + 1 >= SLOWDOWN_TICKS:
            return self._slowed_down(now)
        if not lost and self._doubt is not None:
            self._doubt.errors.append(self._doubt.error(self.count + 1, now))
            if len(self._doubt.errors) > CONFIRM_TICKS:
                return self._weigh_loss(now)
        drift = (1 if error >= 0.5 else -1 if error <= -0.5 else 0) if self.locked else 0
        if drift and drift == self._drift:  # the tempo moved faster than the line: start again from the last two ticks
            last = history[-1]
            self.relock()
            history.append(last)
            return self._accept(now, lost)
        self._drift = drift
        if lost:
            self._doubt = Doubt(self.count, fit[0], period, self._spread(fit), [error])
        return self._accept(now, lost)

    def _weigh_loss(self, now: float) -> TickReading:
        """The ticks since the last loss have come: taken back if they all came early on the line
        (a stall of the server shifted them, nothing was lost), else it stands."""
        doubt, self._doubt = self._doubt, None
        if sum(doubt.errors) / len(doubt.errors) > -max(STALL_SHIFT, STALL_SPREADS * doubt.spread):
            return self._accept(now, 0)
        counts = [count for count, _ in self._history]
        if doubt.before not in counts[:-1]:
            return self._accept(now, 0)
        taken_back = counts[counts.index(doubt.before) + 1] - doubt.before - 1
        self.lost -= taken_back
        self.count -= taken_back
        last_count, last_time = self._history[-1]
        self.relock()
        self._history.append((last_count - taken_back, last_time))
        self._accept(now, 0)
        return TickReading(taken_back=taken_back)

    def _late_previous(self, now: float, taken_back: int) -> TickReading:
        """This tick comes when the count just given to the previous one was due: the previous tick
        was late (a server held it back), not the next after lost ones. Its lost ticks are taken back."""
        self.lost -= taken_back
        self.count -= taken_back
        self._recent[-1] -= taken_back
        last_count, last_time = self._history.pop()
        self._history.append((last_count - taken_back, last_time))
        self._accept(now, 0)
        return TickReading(taken_back=taken_back)

    def _slowed_down(self, now: float) -> TickReading:
        """Most recent ticks seemed to follow lost ones: the tempo dropped by more than a third at once.
        The lost ticks counted for them are taken back, and the line starts again from the last ticks."""
        taken_back = sum(self._recent)
        self._recent.clear()
        self.lost -= taken_back
        self.count -= taken_back
        recent = [when for _, when in list(self._history)[-2:]]
        self.relock()
        for offset, when in enumerate(recent):
            self._history.append((self.count - len(recent) + 1 + offset, when))
        self._accept(now, 0)
        return TickReading(taken_back=taken_back)

    def _duplicate(self) -> TickReading:
        self.duplicates += 1
        return TickReading(duplicate=True)

    def _accept(self, now: float, lost: int) -> TickReading:
        self.count += 1 + lost
        self.lost += lost
        self._recent.append(lost)
        self._history.append((self.count, now))
        fit = self._fit()
        if fit is not None and fit[1] > 0:
            self._period = fit[1]
        elif len(self._history) == 2:
            self._period = self._history[1][1] - self._history[0][1]
        return TickReading(lost=lost)
