"""Tick streams for the MIDI-clock follower's tests: a true clock (tick ``n`` at a known time), the
faults applied to what arrives, the steps a counter sends for it, and which of them are off.

A step lands on the true tick count when the time it is sent at is nearer to true tick ``12 * step``
than to any other tick, and every step is sent once, in order. :class:`ByteCounter` is the rule the
follower replaced (every clock byte is the next tick), for the checks that must fail on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from lofi_live.timing.clock import PPQN, TICKS_PER_STEP, MidiClock
from lofi_live.timing.tick_follower import LOCK_TICKS


@dataclass
class Stream:
    """Arrival times of a clock, and the true tick each one is (a copy repeats its tick)."""

    true_times: list[float]
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    duplicated: int = 0
    dropped: int = 0

    def period(self, tick: int) -> float:
        tick = min(max(tick, 0), len(self.true_times) - 2)
        return self.true_times[tick + 1] - self.true_times[tick]


def true_clock(bpm_from: float, bpm_to: float, beats: float, start: float = 10.0, ramp_from: float = 0.0) -> list[float]:
    """Tick times of a clock whose tempo goes linearly from ``bpm_from`` to ``bpm_to`` over ``beats``
    (starting ``ramp_from`` beats in), integrated tick by tick."""
    times, now = [], start
    ticks = int(beats * PPQN)
    ramp_start = int(ramp_from * PPQN)
    for n in range(ticks + 1):
        times.append(now)
        share = min(max((n - ramp_start) / max(ticks - ramp_start, 1), 0.0), 1.0)
        now += 60.0 / (bpm_from + (bpm_to - bpm_from) * share) / PPQN
    return times


def arrive(true_times: list[float], seed: int, jitter: float | Callable[[random.Random, int], float] = 0.0,
           duplicate: float = 0.0, drop: float = 0.0, clean: int = LOCK_TICKS) -> Stream:
    """The ticks as they arrive: each moved by up to ``jitter`` of a period (or by ``jitter(rng, n)``),
    copied with probability ``duplicate`` (the copy 0-2 ms later), lost with probability ``drop``;
    the first ``clean`` ticks (the follower's lock) and the last one (no later tick shows its loss)
    come unharmed."""
    rng = random.Random(seed)
    stream = Stream(true_times)
    for n, when in enumerate(true_times):
        if clean <= n < len(true_times) - 1 and rng.random() < drop:
            stream.dropped += 1
            continue
        shift = jitter(rng, n) if callable(jitter) else rng.uniform(-jitter, jitter)
        at = when + shift * stream.period(n)
        stream.arrivals.append((at, n))
        if n >= clean and rng.random() < duplicate:
            stream.arrivals.append((at + rng.uniform(0.0, 0.002), n))
            stream.duplicated += 1
    stream.arrivals.sort()
    return stream


def alternating(rng: random.Random, n: int) -> float:  # noqa: ARG001 - the worst case of a quarter period
    return 0.25 if n % 2 else -0.25


class ByteCounter:
    """The rule the follower replaces: every clock byte is the next tick, a step every 12 ticks, sent
    when its tick arrives."""

    def __init__(self) -> None:
        self.tick = -1

    def handle(self, kind: str, now: float) -> tuple[int, float] | None:
        if kind == "start":
            self.tick = -1
            return None
        self.tick += 1
        return (self.tick // TICKS_PER_STEP, now) if self.tick % TICKS_PER_STEP == 0 else None


def steps_of(stream: Stream, counter: MidiClock | ByteCounter, frames: list[float] | None = None) -> list[tuple[int, float]]:
    """Start before the first tick, then every arrival; the steps in the order they are sent, each
    at the sooner of its announced time and its own tick's arrival (what the engine's loop does); a
    step not yet sent when it is retimed goes at its new time. ``frames``: each arrival's time by
    JACK's sample clock, given to the clock with it."""
    counter.handle("start", stream.true_times[0] - 0.01)
    steps: dict[int, float] = {}
    for index, (at, _) in enumerate(stream.arrivals):
        event = counter.handle("clock", at) if frames is None else counter.handle("clock", at, frame=frames[index])
        if isinstance(counter, ByteCounter):
            if event is not None:
                steps[event[0]] = event[1]
        elif event is not None and event.kind == "boundary":
            assert event.step not in steps, f"step {event.step} announced twice"
            steps[event.step] = event.time
        elif event is not None and event.kind == "arrived":
            steps[event.step] = min(steps[event.step], event.time)
        elif event is not None and event.kind == "retime" and steps[event.step] > at:  # not sent yet
            steps[event.step] = event.time
    return sorted(steps.items())


def misplaced(stream: Stream, steps: list[tuple[int, float]]) -> list[tuple[int, int]]:
    """``(step, true tick it was sent nearest to)`` for every step not sent at true tick ``12 * step``,
    and for steps missing from the sequence (as ``(step, -1)``)."""
    wrong = []
    times = stream.true_times
    for step, when in steps:
        nearest = min(range(len(times)), key=lambda n: abs(times[n] - when))
        if nearest != step * TICKS_PER_STEP:
            wrong.append((step, nearest))
    sent = [step for step, _ in steps]
    wrong += [(step, -1) for step in range(sent[-1] + 1) if step not in sent] if sent else []
    return wrong


def stalled(stalls: dict[int, float], beats: float = 32, seed: int = 0, lost: tuple[int, ...] = ()) -> tuple[Stream, list[float]]:
    """A 90 BPM clock as a stalling JACK server delivers it: from tick ``n`` on every arrival comes
    ``stalls[n]`` periods later in wall time (and up to one 64-frame cycle late, as the server's cycle
    goes), while its frame time (the cycle's start on the server's sample clock, which the sender
    placed the tick by) does not move. Ticks in ``lost`` never come. The stream's true times are
    the wall times the ticks were due after the stalls."""
    rng = random.Random(seed)
    frames_at = true_clock(90, 90, beats, start=1000.0)
    period, cycle = frames_at[1] - frames_at[0], 64 / 48000
    shift = [sum(size for at, size in stalls.items() if n >= at) * period for n in range(len(frames_at))]
    true_times = [10.0 + (when - frames_at[0]) + shift[n] for n, when in enumerate(frames_at)]
    stream, frames = Stream(true_times), []
    for n, when in enumerate(true_times):
        if n in lost:
            stream.dropped += 1
            continue
        late = rng.uniform(0.0, cycle)
        stream.arrivals.append((when + late, n))
        frames.append(frames_at[n] - cycle + late)  # the cycle's start, not the tick's place in it
    return stream, frames


def stalled_system_clock(stalls: list[tuple[float, float]], beats: float = 32, seed: int = 0,
                         duplicated: tuple[int, ...] = (), lost: tuple[int, ...] = ()) -> tuple[Stream, list[float]]:
    """A 90 BPM clock timed by the system clock (a hardware clock through a MIDI bridge, a program
    sending by wall time) on a JACK server that stalls: ``(at, length)`` in ticks and periods. What is
    sent during a stall arrives when the server runs again, in the cycle whose frame time is where
    the stall began; after it the server's sample clock is behind by the stall, while the ticks go on
    at their wall times. Ticks in ``duplicated`` come twice (the copy 1 ms later), those in ``lost``
    never; the stream's true times are the wall times the ticks were sent."""
    rng = random.Random(seed)
    times = true_clock(90, 90, beats)
    period, cycle = times[1] - times[0], 64 / 48000
    spans = [(times[0] + at * period, times[0] + (at + length) * period) for at, length in stalls]

    def frame_at(when: float) -> float:
        """The server's sample clock at wall time ``when``: still while it is stopped."""
        return 1000.0 + when - times[0] - sum(min(when, end) - start for start, end in spans if when > start)

    stream, frames = Stream(times), []
    for n, when in enumerate(times):
        if n in lost:
            stream.dropped += 1
            continue
        for copy in range(2 if n in duplicated else 1):
            sent = when + copy * 0.001
            delivered = next((end for start, end in spans if start <= sent < end), sent)
            late = rng.uniform(0.0, cycle)
            stream.arrivals.append((delivered + late, n))
            frames.append(frame_at(delivered) - cycle + late)
        stream.duplicated += n in duplicated
    return stream, frames
