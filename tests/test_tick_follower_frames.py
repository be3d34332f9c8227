"""The MIDI-clock follower on JACK's sample clock: each tick comes with the frame time of the JACK
cycle it arrived in (the input reader's stamp), and a stalled server, which delays every later tick
in wall time, moves nothing on that clock (streams from :mod:`tick_streams`, the server's stalls
applied to the wall times only).
"""

from __future__ import annotations

import random

import pytest

from lofi_live.timing.clock import PPQN, TICKS_PER_STEP, MidiClock
from lofi_live.timing.tick_follower import TickFollower
from tick_streams import misplaced, stalled, stalled_system_clock, steps_of


@pytest.mark.parametrize("stall, at", [(0.7, 47), (0.9, 47), (1.0, 47), (1.6, 45)])
def test_by_jacks_sample_clock_a_stall_of_any_length_moves_no_step_and_loses_no_tick(stall, at):
    """Stalls of the dummy JACK server of up to 1.6 periods (measured by stopping it), one just
    before a step's tick: by arrival time alone a stall of a whole period is a lost tick, by the
    frame time the input reader gives each tick nothing moved. The same wall times without frame
    times put steps off their ticks. (A stall longer than a period and :data:`LATE_TICK_GRACE`
    right where a step's tick is due still lets the step go when its tick was due: nothing came
    to say otherwise; so the longest one here begins three ticks before the step.)"""
    stream, frames = stalled({at: stall, 103: stall, 200: stall, 309: stall})
    clock = MidiClock(90)
    assert misplaced(stream, steps_of(stream, clock, frames)) == []
    assert clock.lost == clock.duplicates == 0
    if stall >= 0.9:
        assert misplaced(stream, steps_of(stream, MidiClock(90))) != []


def test_by_jacks_sample_clock_lost_ticks_are_still_counted_between_stalls():
    stream, frames = stalled({47: 1.0, 200: 0.8}, seed=3, lost=(60, 61, 149, 250))
    clock = MidiClock(90)
    assert misplaced(stream, steps_of(stream, clock, frames)) == []
    assert (clock.lost, clock.duplicates) == (4, 0)


def test_a_new_jack_server_counting_from_zero_relocks_the_follower_and_counts_no_copies():
    """The server restarted under a running clock: frame times start again near 0 while wall time
    goes on. The follower starts a new line (a backwards frame time is no copy of the last tick)."""
    follower = TickFollower(60 / 90 / PPQN)
    period = 60 / 90 / PPQN
    for n in range(40):
        follower.feed(10.0 + n * period, 5000.0 + n * period)
    readings = [follower.feed(12.0 + n * period, 0.5 + n * period) for n in range(40)]
    assert not any(reading.duplicate or reading.lost for reading in readings)
    assert follower.count == 79 and follower.due() == pytest.approx(12.0 + 40 * period, abs=1e-9)


def test_the_next_tick_is_due_in_wall_time_after_a_stall():
    """Steps are sent by wall time: after a stall the line (on frame time) says when the next tick
    comes in wall time, the stall included."""
    follower = TickFollower(60 / 90 / PPQN)
    period = 60 / 90 / PPQN
    for n in range(30):
        follower.feed(10.0 + n * period + (0.9 * period if n >= 20 else 0.0), 700.0 + n * period)
    assert follower.lost == 0
    assert follower.due() == pytest.approx(10.0 + 30.9 * period, abs=1e-9)



def test_a_step_whose_tick_a_stalled_jack_server_holds_back_waits_for_the_server_not_only_the_grace():
    """A stall of 1.5 periods begins just before a step's tick, after the step was announced: by wall
    time its grace runs out during the stall, and a note sent then would sound when the server runs
    again, at the stall's start by its clock (early). The scheduler reads JACK's sample clock and
    holds the step until the server reaches the step's time; then its tick comes and sends it."""
    from lofi_live.live.scheduler import Scheduler
    from lofi_live.timing.groove import Humanize, Swing

    stall_at, stall = 47, 1.5
    stream, frames = stalled({stall_at: stall}, beats=12)
    period = stream.period(0)
    stall_start = stream.true_times[stall_at] - stall * period - 0.3 * period  # the server stops here (wall)

    def frame_clock_at(now: float) -> float:
        """JACK's sample clock at wall time ``now``: frozen while the server is stopped."""
        frame_of_first = frames[0] - (stream.arrivals[0][0] - stream.true_times[0])
        elapsed = now - stream.true_times[0]
        if now >= stall_start:
            elapsed -= min(now - stall_start, stall * period)
        return frame_of_first + elapsed

    scheduler = Scheduler(MidiClock(90), Swing(50), Humanize(0.0, 1), 0.0, lambda *_: None)
    wall = [0.0]
    scheduler.frame_clock = lambda: frame_clock_at(wall[0])
    scheduler.transport("start", stream.true_times[0] - 0.01)
    sent: dict[int, float] = {}
    for index, (at, _) in enumerate(stream.arrivals):
        while (due := scheduler.emit_at()) is not None and due <= at:  # the engine's loop up to this tick
            wall[0] = due
            if not scheduler.held_by_server(due):
                sent[scheduler.due()] = due
        wall[0] = at
        for cue in scheduler.transport("clock", at, frame=frames[index]):
            if cue.kind == "boundary":
                sent[cue.step] = cue.when
    assert misplaced(stream, sorted(sent.items())) == []
    assert sent[4] == pytest.approx(stream.arrivals[48][0])  # with its own tick
    held = Scheduler(MidiClock(90), Swing(50), Humanize(0.0, 1), 0.0, lambda *_: None)  # without the sample clock
    held.transport("start", stream.true_times[0] - 0.01)
    early: dict[int, float] = {}
    for index, (at, _) in enumerate(stream.arrivals):
        while (due := held.emit_at()) is not None and due <= at:
            early[held.due()] = due
        for cue in held.transport("clock", at, frame=frames[index]):
            if cue.kind == "boundary":
                early[cue.step] = cue.when
    assert misplaced(stream, sorted(early.items())) != []


# ---------------------------------------------------------------------------------------------
# A source timed by the system clock


def _random_stalls(seed: int, count: int = 5) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(rng.uniform(20, 360), rng.uniform(0.5, 1.6)) for _ in range(count)]


@pytest.mark.parametrize("seed", range(8))
def test_a_source_on_the_system_clock_is_counted_by_arrival_from_the_first_stall_on(seed):
    """A hardware clock through a bridge keeps sending while the server is stopped: its ticks bunch at
    the stall's start on the sample clock and go on early there. Five stalls of 0.5-1.6 periods: the
    first shows the source's clock (only the steps announced before it is judged may be a tick off),
    every step after it is on its tick. Counted on the sample clock alone, steps go off for good."""
    stalls = _random_stalls(seed)
    stream, frames = stalled_system_clock(stalls, seed=seed)
    clock = MidiClock(90)
    wrong = misplaced(stream, steps_of(stream, clock, frames))
    first = min(at for at, _ in stalls)
    assert all(tick <= first + 2 * TICKS_PER_STEP for _, tick in wrong), (wrong, sorted(stalls))
    # a bunch reads as a copy, then the next tick as following a lost one: counted both ways, the count right
    assert not clock.follower.by_frames and clock.duplicates == clock.lost
    frames_only = MidiClock(90)
    frames_only.follower = TickFollower(60 / 90 / PPQN)
    assert len(misplaced(stream, steps_of(stream, frames_only, frames))) > 3


def test_a_source_on_the_system_clock_with_copies_and_lost_ticks_between_stalls():
    stalls = [(40.3, 0.7), (130.6, 1.3), (250.2, 0.9)]
    stream, frames = stalled_system_clock(stalls, seed=5, duplicated=(60, 170, 300), lost=(90, 200, 330))
    clock = MidiClock(90)
    wrong = misplaced(stream, steps_of(stream, clock, frames))
    assert all(tick <= 40 + 2 * TICKS_PER_STEP for _, tick in wrong), wrong
    assert clock.duplicates - 3 == clock.lost - 3 >= 0 and not clock.follower.by_frames


@pytest.mark.parametrize("seed", range(8))
def test_a_source_on_the_sample_clock_stays_counted_by_it_through_random_stalls(seed):
    stalls = _random_stalls(seed + 100)
    stream, frames = stalled({int(at) + 1: length for at, length in stalls}, seed=seed)
    clock = MidiClock(90)
    steps_of(stream, clock, frames)
    assert clock.follower.by_frames and clock.lost == clock.duplicates == 0
