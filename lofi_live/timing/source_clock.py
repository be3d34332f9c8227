"""Which clock a MIDI clock source keeps time by, judged at each stall of the JACK server.

On JACK each tick comes with two times: when it arrived (wall time) and the frame time of the JACK
cycle it came in (the server's sample clock, :mod:`lofi_live.midi.input_reader`). While the server
runs, the two agree. When it stalls (a loaded machine stops the dummy server for up to a tick period
or more), every later cycle comes later in wall time, and a source shows which clock it keeps:

* a source timed by the sample clock (a DAW on the same server, ``jack_midi_clock``) sends nothing
  during the stall and goes on where it was: its ticks stay on their line by frame time, and come
  late by the stall in wall time (by arrival alone, a stall of a period is a lost tick);
* a source timed by the system clock (a hardware clock through a MIDI bridge, a program that sends
  by wall time) goes on sending: what it sent during the stall arrives together when the server runs
  again, and its later ticks stay on their line by wall time, early by the stall on the sample
  clock (bunched ticks then read as copies there, and the count comes out short).

So :class:`SourceClockFollower` runs two :class:`~lofi_live.timing.tick_follower.TickFollower`\\ s,
one on each clock, and counts with the one of the clock the source keeps (the sample clock until a
stall has shown otherwise: a DAW on JACK is the usual source). A stall shows as a jump of at least
:data:`STALL_JUMP` of a period in the arrival time less the frame time. :data:`JUDGE_TICKS` ticks
later the two lines from before the stall are asked where those ticks lie: the source's clock puts
them on whole counts, the other a stall's length off. When the followers counted differently since
the stall and the other clock is the source's, the count moves by their difference (as a lost tick,
or one taken back) and the other follower counts from then on. A stall of a whole number of periods
leaves both lines on whole counts: the source is then judged by what arrived, each tick after the
stall one count (no fault is likely that close to a stall).
"""

from __future__ import annotations

from dataclasses import dataclass

from lofi_live.timing.tick_follower import TickFollower, TickReading

#: A stall: the arrival time less the frame time grew by this many periods from one tick to the next.
STALL_JUMP = 0.3
#: Ticks after the one a stall delayed before the source's clock is judged.
JUDGE_TICKS = 4
#: The residual (distance to a whole count, in periods) one clock must beat the other's by to judge.
DECISIVE = 0.15


@dataclass
class Stall:
    """A stall being judged: each follower's count and line (time of that count, period) before it,
    the ticks since, and how far the last of them lie from whole counts of each line."""

    frames_before: tuple[int, float, float]
    arrival_before: tuple[int, float, float]
    ticks: int = 0  # since the last stall (one more may come before this one is judged)
    arrived: int = 1  # every tick since the first, the one it delayed included
    frame_residual: float = 0.0
    arrival_residual: float = 0.0


def _residual(line: tuple[int, float, float], when: float) -> float:
    """How far ``when`` lies from a whole count of ``line`` (in periods, 0 to 0.5)."""
    _, at, period = line
    position = (when - at) / period
    return abs(position - round(position))


class SourceClockFollower:
    """Counts MIDI clock ticks by the clock their source keeps (see the module's text). Fed like a
    :class:`TickFollower`; ticks without a frame time are counted by arrival alone."""

    def __init__(self, period: float):
        self.on_frames = TickFollower(period)
        self.on_arrival = TickFollower(period)
        self.by_frames = True  # which follower counts: the sample clock's, until a stall shows otherwise
        self._offset: float | None = None  # the last tick's arrival time less its frame time
        self.judged = False  # a stall has shown the source's clock by time
        self._settled = (-1, -1)  # both followers' counts when the clock counted by was last settled
        self._stall: Stall | None = None

    @property
    def counting(self) -> TickFollower:
        return self.on_frames if self.by_frames and self._offset is not None else self.on_arrival

    @property
    def period(self) -> float:
        return self.counting.period

    @property
    def duplicates(self) -> int:
        return self.counting.duplicates

    @property
    def lost(self) -> int:
        return self.counting.lost

    def due(self, ahead: int = 1) -> float | None:
        return self.counting.due(ahead)

    def due_frame(self, ahead: int = 1) -> float | None:
        return self.counting.due_frame(ahead)  # None from the arrival follower: its line is on wall time

    def feed(self, now: float, frame: float | None = None) -> TickReading:
        """One tick arrived at ``now`` (``frame``: the same on JACK's sample clock, when known)."""
        if frame is None:  # no sample clock (or no more): arrival times alone
            self._offset, self._stall = None, None
            return self.on_arrival.feed(now)
        offset = now - frame
        stalled = self._offset is not None and offset - self._offset >= STALL_JUMP * self.period
        if stalled and self._stall is not None:  # another stall before the first was judged: judged
            self._stall.ticks = 0  # together, from the lines before the first, after the last
            self._stall.arrived += 1
            self._stall.frame_residual = self._stall.arrival_residual = 0.0
        elif stalled:
            lines = self.on_frames.line(), self.on_arrival.line()
            if lines[0] is not None and lines[1] is not None:
                self._stall = Stall(lines[0], lines[1])
        self._offset = offset
        on_frames, on_arrival = self.on_frames.feed(now, frame), self.on_arrival.feed(now)
        reading = on_frames if self.by_frames else on_arrival
        stall = self._stall
        if stall is None or stalled:
            return reading
        stall.ticks += 1
        stall.arrived += 1
        if stall.ticks > JUDGE_TICKS - 2:  # the last two ticks of the watch: past any bunch
            stall.frame_residual += _residual(stall.frames_before, frame)
            stall.arrival_residual += _residual(stall.arrival_before, now)
        if stall.ticks < JUDGE_TICKS or reading.duplicate:  # a correction must come with a counted tick
            return reading
        self._stall = None
        return self._judge(stall, reading)

    def _judge(self, stall: Stall, reading: TickReading) -> TickReading:
        """The stall's ticks have come: count on the source's clock from now on. When that changes
        the follower that counts, the count moves by the two followers' difference since the last
        stall judged by time (so a count given at a stall judged only by what arrived is mended)."""
        if abs(stall.frame_residual - stall.arrival_residual) >= 2 * DECISIVE:  # over the two ticks
            by_frames, settles = stall.frame_residual < stall.arrival_residual, True
        elif not self.judged and stall.arrived in self._counted_since(stall):
            # a stall of whole periods, with no stall judged by time yet: every tick one count
            counted_frames, counted_arrival = self._counted_since(stall)
            if counted_frames == counted_arrival:
                return reading
            by_frames, settles = stall.arrived == counted_frames, False
        else:
            return reading
        move = 0
        if by_frames != self.by_frames:
            frames_since = self.on_frames.count - self._settled[0]
            arrival_since = self.on_arrival.count - self._settled[1]
            move = frames_since - arrival_since if by_frames else arrival_since - frames_since
            self.by_frames = by_frames
        if settles:
            self.judged = True
            self._settled = (self.on_frames.count, self.on_arrival.count)
        if not move:
            return reading
        return TickReading(lost=reading.lost + max(move, 0), taken_back=reading.taken_back + max(-move, 0))

    def _counted_since(self, stall: Stall) -> tuple[int, int]:
        """What each follower counted since just before the stall."""
        return self.on_frames.count - stall.frames_before[0], self.on_arrival.count - stall.arrival_before[0]
