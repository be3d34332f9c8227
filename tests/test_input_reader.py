"""Arrival times of MIDI input read from rtmidi's queue (lofi_live.midi.input_reader)."""

from __future__ import annotations

import pytest

from lofi_live.midi.input_reader import arrival_times


def test_a_message_read_alone_is_stamped_when_it_is_read():
    assert arrival_times([0.7], 100.0) == [100.0]


def test_a_burst_read_late_keeps_the_spacing_it_arrived_with():
    # three clock ticks 27.8 ms apart, held up and read together: not three ticks at once
    stamps = arrival_times([0.5, 0.0278, 0.0278], 10.0)
    assert stamps == pytest.approx([10.0 - 0.0556, 10.0 - 0.0278, 10.0])


def test_negative_deltas_never_put_a_message_after_the_next():
    stamps = arrival_times([0.0, -0.001, 0.002], 5.0)
    assert stamps == sorted(stamps) and stamps[-1] == 5.0


def test_a_message_read_late_is_stamped_by_rtmidis_delta_from_the_one_before():
    """The reader was held up 30 ms: the tick it then reads alone would be stamped 30 ms late, one
    period at 90 BPM (a lost tick by its gap); rtmidi's delta to the tick before bounds it."""
    from lofi_live.midi.input_reader import DELTA_SLACK, _bounded

    assert _bounded(10.058, 10.0, 0.0278) == 10.0278 + DELTA_SLACK
    assert _bounded(10.02, 10.0, 0.0278) == 10.02  # read promptly: its own time
    assert _bounded(9.99, 10.0, 0.0) == 10.0  # never before the one before
    assert _bounded(3.0, float("-inf"), 0.5) == 3.0  # the first message
