"""The engine's input: the feedback guard (its own notes coming back), odd and random input.

The guard's rules and the input handler are driven by hand on a simulated clock (see
tests/test_engine_unit.py for the conventions), and through ``Voices`` for what is sent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import mido
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_sim import Sim, off
from lofi_live.live.intake import FeedbackGuard
from lofi_live.midi.ports import MalformedMessage, parse_message

# ---------------------------------------------------------------------------------------------
# Feedback guard


def test_feedback_guard_ignores_own_notes_coming_back_within_the_window():
    guard = FeedbackGuard(0.03)
    guard.note_sent(10.000, True, 0, 60, 90)
    assert guard.is_echo(10.002, True, 0, 60, 90)  # came back 2 ms later
    assert guard.is_echo(10.003, True, 0, 60, 90)  # the same echo delivered twice (rtmidi's JACK input)
    assert not guard.is_echo(10.009, True, 0, 60, 90)  # each sent note is matched once
    guard.note_sent(10.010, False, 0, 60, 0)
    assert guard.is_echo(10.012, False, 0, 60, 0)  # the note-off of a note-on that came back
    guard.note_sent(10.020, False, 0, 62, 0)
    assert not guard.is_echo(10.022, True, 0, 62, 0)  # a note-on is not the echo of a note-off
    guard.note_sent(10.100, True, 0, 64, 90)
    assert not guard.is_echo(10.200, True, 0, 64, 90)  # 100 ms later: the player, not an echo


def test_feedback_guard_keeps_a_player_doubling_the_models_notes():
    guard = FeedbackGuard(0.03)
    guard.note_sent(10.000, True, 0, 60, 90)
    assert not guard.is_echo(10.003, True, 1, 60, 90)  # another channel
    assert not guard.is_echo(10.003, True, 0, 60, 70)  # another velocity
    guard.note_sent(10.200, False, 0, 60, 0)
    # the player's note-off of their own note (its note-on was never an echo) is kept
    assert not guard.is_echo(10.203, False, 0, 60, 0)
    # order: once a later message came back, an earlier one no longer can
    guard.note_sent(11.000, True, 0, 62, 90)
    guard.note_sent(11.001, True, 0, 64, 90)
    assert guard.is_echo(11.003, True, 0, 64, 90)
    assert not guard.is_echo(11.004, True, 0, 62, 90)


def test_engine_with_looped_output_never_answers_itself():
    sim = Sim(mode="continue", response_bars=1, wait_beats=2)
    sim.engine.intake.guard.window = 0.03
    engine = sim.engine
    # loop the output straight back into the input, 1 ms later
    original = engine.send

    def loop(message):
        original(message)
        if message.type in ("note_on", "note_off"):
            engine.intake.queue.put((time.perf_counter() + 0.001, message))

    engine.send = loop
    engine.prime(["C4"])
    engine.plan(0)
    for step in range(40):
        sim.run(step)
        while not engine.intake.queue.empty():
            stamp, message = engine.intake.queue.get()
            engine._handle(message, stamp)
    assert sim.model_steps() == list(range(8))  # one response, no self-triggered second one
    assert engine.intake.guard.ignored >= 16
    assert not engine.responder.timeline.tokens("player")
    sim.close()


# ---------------------------------------------------------------------------------------------
# Odd input


def test_odd_input_is_ignored_and_logged_once_per_kind(caplog):
    sim = Sim()
    odd = [
        mido.Message("sysex", data=[1, 2, 3]), mido.Message("pitchwheel", pitch=100), mido.Message("aftertouch", value=3),
        mido.Message("polytouch", note=60, value=3), mido.Message("program_change", program=5), mido.Message("clock"),
        mido.Message("start"), mido.Message("songpos", pos=4), off(50), MalformedMessage(b"\x90\x80"),
        mido.Message("control_change", control=1, value=64), mido.Message("active_sensing"),
    ]
    with caplog.at_level(logging.WARNING, logger="lofi_live.live.engine"):
        for repeat in range(50):
            for i, message in enumerate(odd):
                sim.engine._handle(message, 0.001 * repeat + i * 1e-5)
    kinds = ["sysex", "pitch bend", "aftertouch", "program change", "transport messages", "note-off without", "malformed", "control change"]
    text = caplog.text
    for kind in kinds:
        assert text.count(kind) == 1, kind
    assert len(caplog.records) <= len(odd) + 1
    sim.close()


#: Random bytes, and three-byte channel messages (notes, CCs, pitch bend...) that decode, out of range or not.
_channel_message = st.tuples(st.integers(0x80, 0xEF), st.integers(0, 130), st.integers(0, 130)).map(bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(min_size=0, max_size=6), _channel_message), max_size=40))
def test_fuzz_random_byte_messages_never_break_the_input_handler(chunks):
    # nothing is caught around the engine's own logic: a fault there raises here
    sim = Sim(thru=True)
    messages = [parse_message(data) for data in chunks]
    for i, message in enumerate(messages):  # 10 ms apart: a key's note-on twice within 5 ms is one note-on
        sim.engine._handle(message, i * 0.01)
    sim.run(3)
    sim.engine.panic()
    assert sim.engine.intake.messages_in == len(messages)
    played = Counter((m.channel, m.note) for m in messages if m.type == "note_on" and m.velocity > 0)
    sent = [m for _, m in sim.sent]
    out = Counter((m.channel, m.note) for m in sent if m.type == "note_on" and m.velocity > 0)
    assert all(out[key] >= count for key, count in played.items())  # every played note-on went through
    ons = sorted((m.channel, m.note) for m in sent if m.type == "note_on" and m.velocity > 0)
    offs = sorted((m.channel, m.note) for m in sent if m.type == "note_off")
    assert ons == offs and not sim.engine.voices.sounding  # every note-on got its note-off
    if any(m.type == "malformed" for m in messages):
        assert sim.engine.odd.counts["malformed"] >= 1
    sim.close()




def test_an_echo_that_arrives_while_the_engine_thread_is_still_sending_is_recognised():
    """The loopback can deliver (and the input thread stamp) a note before ``send`` even returns on a busy
    machine: the engine notes what it sends before sending, so such an echo is still its own."""
    from lofi_live.timing.clock import InternalClock
    from lofi_live.live.voices import Voices

    guard = FeedbackGuard(0.03)
    arrivals: list[tuple[float, mido.Message]] = []

    def looped_port(message: mido.Message) -> None:
        arrivals.append((time.perf_counter(), message))  # the echo, stamped on arrival
        time.sleep(0.005)  # the sending thread descheduled before send returns

    voices = Voices(looped_port, guard, InternalClock(120.0), max_note_beats=8.0, channels={0})
    voices.note_on(0, 60, 90, "model", None)
    voices.note_off((0, 60), time.perf_counter(), None)
    assert [guard.is_echo(stamp, m.type == "note_on", m.channel, m.note, m.velocity) for stamp, m in arrivals] == [True, True]


def test_a_transport_stop_ends_the_models_and_metronomes_notes_then_all_notes_off_where_nothing_passes_through():
    """On Stop the model and the metronome fall silent: their note-offs, then All Notes Off on their
    channels (a note-off lost on the way ends too), but not on a channel where a key the player holds
    still sounds through ``--thru``."""
    from lofi_live.timing.clock import InternalClock
    from lofi_live.live.voices import Voices

    sent: list[mido.Message] = []
    voices = Voices(sent.append, FeedbackGuard(0.03), InternalClock(120.0), max_note_beats=8.0, channels={0})
    voices.note_on(0, 60, 90, "model", None)
    voices.note_on(2, 64, 90, "model", None)
    voices.note_on(9, 76, 90, "metronome", None)
    voices.thru(2, 50, 80, True)  # the player's key on the model's second channel
    sent.clear()
    voices.stop_parts("model", "metronome")
    assert sorted((m.channel, m.note) for m in sent if m.type == "note_off") == [(0, 60), (2, 64), (9, 76)]
    assert [(m.channel, m.control) for m in sent if m.type == "control_change"] == [(0, 123), (9, 123)]
    assert sent[-1].type == "control_change" and list(voices.sounding) == [(2, 50)]
