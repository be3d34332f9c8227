"""The bar position of every live grid step, for each clock, and where a continue-mode answer starts."""

from __future__ import annotations

import pytest

from lofi_live.live.bars import BarGrid, link_position
from lofi_live.timing.clock import PPQN, MidiClock
from lofi_live.tokens.grid import STEPS_PER_BAR


def test_internal_clock_with_metronome_counts_bars_from_the_metronomes_first_accent():
    bars = BarGrid.for_clock("internal", metronome=True)
    assert bars.positions(0, 16) == [0, 1, 2, 3, 4, 5, 6, 7] * 2
    assert bars.position(8 * 5 + 3) == 3
    assert not bars.first_onset(3.1)  # the player does not move the metronome's bar
    assert bars.position(0) == 0


def test_internal_clock_without_metronome_the_first_onset_snapped_to_the_grid_is_beat_1():
    bars = BarGrid.for_clock("internal")
    assert not bars.known and bars.position(5) is None and bars.positions(0, 4) is None
    assert bars.first_onset(3.1)  # beat 3.1 snaps to step 6
    assert (bars.position(6), bars.position(5), bars.position(14), bars.position(0)) == (0, 7, 0, 2)
    assert not bars.first_onset(7.0)  # later onsets change nothing
    assert bars.downbeat == 6
    late = BarGrid.for_clock("internal")
    late.first_onset(3.26)  # past the quarter-step midpoint: step 7
    assert late.downbeat == 7


def test_midi_clock_steps_are_song_steps_start_is_bar_1_and_song_position_counts_from_it():
    clock = MidiClock(120)
    bars = BarGrid.for_clock("midi")
    tick = 60 / 120 / PPQN
    clock.handle("start", 0.0)
    steps = []
    for n in range(8 * 12 * 2 + 1):  # two bars of ticks
        event = clock.handle("clock", n * tick)
        if event is not None and event.kind == "boundary":
            steps.append(event.step)
    assert [bars.position(step) for step in steps] == [0, 1, 2, 3, 4, 5, 6, 7] * 2 + [0]
    clock.handle("stop", 5.0)
    event = clock.handle("songpos", 5.0, pos=4 * 16 + 6)  # bar 5, beat 2.5 (sixteenths from the song's start)
    clock.handle("continue", 5.0)
    first = clock.handle("clock", 5.01)
    assert first.kind == "boundary" and first.step == event.step == 8 * 4 + 3
    assert bars.position(first.step) == 3  # beat 2.5 of its bar: the 4th half-beat step


@pytest.mark.parametrize("phase, position", [(0.0, 0), (0.5, 1), (1.0, 2), (2.5, 5), (3.5, 7), (3.99, 0), (4.0, 0), (6.0, 4)])
def test_link_position_is_the_sessions_phase_at_quantum_4_in_half_beats(phase, position):
    assert link_position(phase) == position


def test_link_bar_line_from_a_steps_session_phase_and_the_engines_bar_aligned_beat_0():
    bars = BarGrid.from_link_phase(13, 2.5)  # step 13 is 2.5 beats into the session's bar
    assert bars.downbeat == 8 and bars.position(13) == 5 and bars.position(16) == 0
    # the Link clock's beat 0 is a session bar line, so step s has phase (s * 0.5) % 4
    engine = BarGrid.for_clock("link")
    assert all(engine.position(step) == link_position(step * 0.5 % 4) for step in range(40))


def test_a_continue_mode_answer_starts_on_the_first_bar_line_at_or_after_the_wait():
    bars = BarGrid.for_clock("internal", metronome=True)
    assert [bars.answer_start(step) for step in (0, 1, 7, 8, 9, 15, 16)] == [0, 8, 8, 8, 16, 16, 16]
    looped = BarGrid.for_clock("internal")
    assert looped.answer_start(11) == 11  # no bar line yet: no waiting for one
    looped.first_onset(3.0)  # step 6 is beat 1
    assert [looped.answer_start(step) for step in (6, 7, 13, 14, 15)] == [6, 14, 14, 14, 22]
    assert all(looped.position(looped.answer_start(step)) == 0 for step in range(6, 60))
    assert all(0 <= looped.answer_start(step) - step < STEPS_PER_BAR for step in range(0, 60))


def test_an_unknown_clock_is_refused():
    with pytest.raises(ValueError, match="unknown clock"):
        BarGrid.for_clock("smpte")
