"""Internal tempo and MIDI beat-clock following, without ports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lofi_live.timing.clock import PPQN, TICKS_PER_STEP, InternalClock, MidiClock, step_beat


def test_grid_times_are_computed_from_the_start_never_accumulated():
    clock = InternalClock(120)
    clock.start(1000.0)
    assert clock.step_time(0) == 1000.0
    assert clock.step_time(1) == pytest.approx(1000.25)
    # one hour of steps: exactly n * 0.25 s, no rounding drift
    assert clock.step_time(14400) == pytest.approx(1000.0 + 3600.0, abs=1e-9)
    assert clock.beat_at(1001.0) == pytest.approx(2.0)


@given(st.floats(30, 300), st.integers(0, 100000))
def test_step_time_round_trips_through_beats(bpm, step):
    clock = InternalClock(bpm)
    clock.start(5.0)
    assert clock.beat_at(clock.step_time(step)) == pytest.approx(step_beat(step), rel=1e-9, abs=1e-6)


def test_tempo_change_keeps_the_current_beat_and_changes_the_grid_after_it():
    clock = InternalClock(120)
    clock.start(0.0)
    clock.set_bpm(60, 1.0)  # beat 2 at t=1
    assert clock.beat_at(1.0) == pytest.approx(2.0)
    assert clock.step_time(4) == pytest.approx(1.0)  # step 4 = beat 2
    assert clock.step_time(6) == pytest.approx(2.0)  # one beat later at 60 BPM


def _feed(clock, kinds, start=0.0, tick=60 / 90 / PPQN):
    """Feed messages one tick apart; returns the boundary steps seen with the tick they are due at
    (a step is announced when the tick before it arrives, for the time its own tick is due)."""
    seen = []
    t = start
    for kind in kinds:
        event = clock.handle(kind, t)
        if event is not None and event.kind == "boundary":
            seen.append((event.step, round(event.time / tick)))
        if kind == "clock":
            t += tick
    return seen, t


def test_midi_clock_start_then_every_12_ticks_is_a_grid_step():
    clock = MidiClock()
    seen, _ = _feed(clock, ["start"] + ["clock"] * 49)
    assert TICKS_PER_STEP == 12
    assert [step for step, _ in seen] == [0, 1, 2, 3, 4]  # ticks 0, 12, 24, 36, 48
    assert [tick for _, tick in seen] == [0, 12, 24, 36, 48]
    assert clock.bpm == pytest.approx(90, rel=1e-6)  # estimated from the tick intervals


def test_midi_clock_without_start_only_measures_the_tempo():
    clock = MidiClock(default_bpm=100)
    seen, _ = _feed(clock, ["clock"] * 30)
    assert seen == [] and not clock.running
    assert clock.ticks_without_start == 30
    assert clock.bpm == pytest.approx(90, rel=1e-6)


def test_stop_then_continue_resumes_the_position():
    clock = MidiClock()
    seen, t = _feed(clock, ["start"] + ["clock"] * 18)  # ticks 0..17
    assert clock.handle("stop", t).kind == "stop"
    assert clock.handle("clock", t + 0.01) is None  # ticks while stopped do not move the song
    event = clock.handle("continue", t + 1)
    assert event.kind == "continue" and event.step == 2  # next boundary: tick 24
    more, _ = _feed(clock, ["clock"] * 7, start=t + 1)  # ticks 18..24
    assert [step for step, _ in more] == [2]


def test_song_position_pointer_sets_the_next_tick():
    clock = MidiClock()
    event = clock.handle("songpos", 0.0, pos=8)  # 8 sixteenths = 2 beats = step 4
    assert event.kind == "position" and event.step == 4
    clock.handle("continue", 0.0)
    seen, _ = _feed(clock, ["clock"] * 13)
    assert [step for step, _ in seen] == [4, 5]


def test_tempo_estimate_ignores_one_late_tick_and_the_gap_after_stop():
    clock = MidiClock()
    tick = 60 / 120 / PPQN
    t = 0.0
    clock.handle("start", t)
    for i in range(40):
        jitter = 0.004 if i == 20 else 0.0
        clock.handle("clock", t + jitter)
        t += tick
    assert clock.bpm == pytest.approx(120, rel=0.01)
    clock.handle("stop", t)
    clock.handle("continue", t + 5.0)
    clock.handle("clock", t + 5.0)
    assert clock.bpm == pytest.approx(120, rel=0.01)


def test_beat_between_ticks_is_interpolated_but_never_past_the_next_tick():
    clock = MidiClock()
    tick = 60 / 120 / PPQN
    clock.handle("start", 0.0)
    for i in range(25):
        clock.handle("clock", i * tick)
    assert clock.beat_at(24 * tick) == pytest.approx(1.0)
    assert clock.beat_at(24.5 * tick) == pytest.approx(1.0 + 0.5 / PPQN)
    assert clock.beat_at(30 * tick) == pytest.approx(1.0 + 1 / PPQN)
