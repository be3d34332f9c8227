"""The engine without ports: played notes -> tokens, the window, modes, overload, panic, odd input.

Most tests drive the engine by hand on a simulated clock (120 BPM: a grid step is 0.25 s): input
messages are handled at their time stamps and each grid boundary is called in order, after the
look-ahead token is ready. A few run the real engine thread for a couple of seconds.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from pathlib import Path

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_fakes import VOCABULARY, FakeModel
from engine_sim import STEP, Sim, off, on, phrase
from lofi_live import tokens as token_rules
from lofi_live.engine import Engine, EngineConfig
from lofi_live.grid_tokens import onset_step
from lofi_live.intake import FeedbackGuard
from lofi_live.timeline import OnsetSteps, Timeline
from lofi_live.ports import MalformedMessage, parse_message
from lofi_live.sampling import Sampler

# ---------------------------------------------------------------------------------------------
# Tokenizing played notes


def test_a_played_note_belongs_to_the_nearest_grid_step():
    assert onset_step(0.0) == 0
    assert onset_step(0.24) == 0  # a little late still counts for step 0
    assert onset_step(0.26) == 1  # a little early counts for the next step
    assert onset_step(1.0) == 2


def test_notes_in_one_step_form_a_chord_token_a_lone_note_its_pitch():
    tokenizer = OnsetSteps()
    for pitch in (60, 64, 67):
        tokenizer.note_on((0, pitch), 0.02)
    tokenizer.note_on((0, 62), 0.5)
    assert tokenizer.close_due(0.2) == []
    assert tokenizer.close_due(0.25) == [(0, token_rules.onset_token([60, 64, 67]))]
    assert tokenizer.close_due(0.75) == [(1, "D4")]
    assert token_rules.onset_token([60, 64, 67]) == "0.4.7"


def test_played_tokens_enter_the_window_unknown_ones_mapped_to_the_nearest():
    sim = Sim()
    events = [(0.001, on(60)), (0.002, on(64)), (0.003, on(67)), (0.2, off(60)), (0.2, off(64)), (0.2, off(67, zero_velocity=True)),
              (0.251, on(61)), (0.45, off(61))]
    sim.run(3, events)
    # C E G -> the chord 0.4.7; C#4 is unknown -> its nearest known token: C4 (a semitone away,
    # like D4: the tie goes to the first in the vocabulary)
    assert sim.engine.timeline.tokens("player") == ["0.4.7", "C4"]
    assert not sim.engine.conductor.held  # velocity-0 note-on released the G
    sim.close()


def test_window_is_the_last_32_tokens_of_player_and_model():
    timeline = Timeline(32)
    for i in range(40):
        timeline.append(i, "player" if i % 2 else "model", VOCABULARY[i % 12], i % 12)
    assert len(timeline.window_indices()) == 32
    assert timeline.window_indices() == [i % 12 for i in range(8, 40)]
    assert timeline.count == 40


def test_seed_primes_the_window_and_the_model_starts_at_once():
    sim = Sim(response_bars=1)
    assert sim.engine.prime(["C4", "D4", "E4"]) == 3
    sim.engine.plan(0)
    sim.run(9)
    assert sim.model_steps() == list(range(8))  # 1 bar = 8 steps, from step 0
    tokens = sim.engine.timeline.tokens("model")
    assert tokens[:3] == ["F4", "G4", "A4"]  # the fake continues after E4
    sim.close()


# ---------------------------------------------------------------------------------------------
# Modes


def test_continue_mode_answers_after_the_player_is_silent_for_wait_beats():
    sim = Sim(mode="continue", wait_beats=2, response_bars=1)
    sim.run(30, phrase([60, 62, 64, 65]))
    # last note-off at 0.95 s = beat 1.9; 2 silent beats -> beat 3.9 -> the model starts at step 8 (beat 4)
    assert sim.model_steps() == list(range(8, 16))
    assert sim.engine.conductor.state == "idle"
    first = [m for step, m in sim.sent if step == 8 and m.type == "note_on"]
    assert [m.note for m in first] == token_rules.token_pitches("G4")  # continues after F4
    sim.close()


def test_a_release_time_ends_the_phrase_before_wait_beats():
    sim = Sim(mode="continue", wait_beats=4, release_ms=600, response_bars=1)
    sim.run(30, phrase([60, 62, 64, 65]))
    # last note-off at 0.95 s; 600 ms of silence (1.2 beats at 120 BPM, shorter than 4 beats) -> beat 3.1
    # -> the model starts at step 7 (beat 3.5)
    assert sim.model_steps()[0] == 7
    sim.close()


def test_continue_mode_stops_at_once_when_the_player_comes_back():
    sim = Sim(mode="continue", wait_beats=2, response_bars=4)
    events = phrase([60, 62]) + phrase([64], start_step=10.2)
    sim.run(20, events)
    steps = sim.model_steps()
    # silence from beat 0.7 (last off at 0.45 s) -> starts at step 6 (beat 3 >= 2.7)
    assert steps[0] == 6
    # the player's note at step 10.2 cancels step 11 onwards; it ends at beat 5.5, so after
    # 2 silent beats (beat 7.5) the model answers again from step 15
    assert steps == [6, 7, 8, 9, 10] + list(range(15, 21))
    assert sim.engine.conductor.state == "responding"
    sim.close()


def test_accompany_mode_plays_every_step_while_the_player_plays():
    sim = Sim(mode="accompany", response_bars=1)
    sim.run(12, phrase([60, 62, 64, 65, 67, 69, 71, 72]))
    steps = sim.model_steps()
    assert steps[0] == 2  # step 0's token closes at step 0.5, so the model joins at step 2
    assert steps == list(range(2, 13))  # every step, during and after the player (1 bar tail)
    sim.run(40)
    assert max(sim.model_steps()) < 8 + 1 + 8 + 2  # stops about one bar after the player's last note
    sim.close()


def test_gate_and_note_offs_every_note_on_has_its_note_off():
    sim = Sim(response_bars=1, gate=0.9)
    sim.engine.prime(["0.4.7"])
    sim.engine.plan(0)
    sim.run(0)
    # a chord is several notes; their note-offs are timed 0.9 of a step later (0.225 s at 120 BPM)
    assert len(sim.engine.voices.sounding) == 3
    assert all(abs(when - 0.225) < 1e-9 for when, _, _ in sim.engine.voices._timers)
    sim.run(12)
    sim.engine.voices.run_timers(100.0)
    ons = [(m.channel, m.note) for _, m in sim.sent if m.type == "note_on"]
    offs = [(m.channel, m.note) for _, m in sim.sent if m.type == "note_off"]
    assert len(ons) == len(offs) and sorted(ons) == sorted(offs)
    sim.close()


def test_panic_sends_note_offs_and_all_notes_off_on_every_used_channel():
    sim = Sim(response_bars=4, out_channel=2, metronome=9)
    sim.engine.prime(["0.4.7"])
    sim.engine.plan(0)
    sim.run(2)
    sounding = set(sim.engine.voices.sounding)
    assert sounding
    before = len(sim.sent)
    sim.engine.panic()
    after = [m for _, m in sim.sent[before:]]
    assert {(m.channel, m.note) for m in after if m.type == "note_off"} == sounding
    assert {m.channel for m in after if m.type == "control_change" and m.control == 123} == {2, 9}
    assert not sim.engine.voices.sounding
    sim.close()


def test_thru_holds_a_played_note_while_it_is_held_and_the_phrase_stays_open():
    # --max-note-beats bounds the engine's own notes, not a key the player holds down
    sim = Sim(thru=True, max_note_beats=2, wait_beats=1, response_bars=1)
    sim.run(20, [(0.01, on(70, channel=3))])  # held for 5 s = 10 beats
    sim.engine.voices.run_timers(5.0)
    assert [m.channel for _, m in sim.sent if m.type == "note_on" and m.note == 70] == [3]
    assert (3, 70) in sim.engine.voices.sounding
    assert not [m for _, m in sim.sent if m.type == "note_off" and m.note == 70]
    model_ons = lambda: [step for step, m in sim.sent if m.type == "note_on" and m.channel == 0]  # noqa: E731
    assert model_ons() == []  # the phrase is open while the key is down
    sim.run(30, [(5.1, off(70, channel=3))])  # released at beat 10.2
    assert [m.channel for _, m in sim.sent if m.type == "note_off" and m.note == 70] == [3]
    # one silent beat later (beat 11.2) the model answers, from step 23 (beat 11.5)
    assert model_ons()[0] == 23
    sim.close()


def test_key_lock_only_plays_tokens_of_the_scale():
    model = FakeModel()
    sim = Sim(model=model, response_bars=2, key="C", scale="major")
    sim.engine.prime(["B4"])  # the fake would continue with C5, then 0.4.7, 9.0.4, 2.5.9, 7.11.2...
    sim.engine.plan(0)
    sim.run(16)
    for token in sim.engine.timeline.tokens("model"):
        assert token_rules.token_pitch_classes(token) <= {0, 2, 4, 5, 7, 9, 11}
    sim.close()


# ---------------------------------------------------------------------------------------------
# Feedback guard


def test_feedback_guard_ignores_own_notes_coming_back_within_the_window():
    guard = FeedbackGuard(0.03)
    guard.note_sent(10.000, True, 0, 60, 90)
    assert guard.is_echo(10.002, True, 0, 60, 90)  # came back 2 ms later
    assert not guard.is_echo(10.003, True, 0, 60, 90)  # each sent note is matched once
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
    assert not engine.timeline.tokens("player")
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
    with caplog.at_level(logging.WARNING, logger="lofi_live.engine"):
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
    for i, message in enumerate(messages):
        sim.engine._handle(message, i * 0.001)
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


# ---------------------------------------------------------------------------------------------
# Real engine thread: timing, overload


def _timed_run(seconds, **config):
    model = FakeModel(delay=config.pop("model_delay", 0.0))
    sent = []
    engine = Engine(model, Sampler(0, None, 0), send=lambda m: sent.append((time.perf_counter(), m)),
                    config=EngineConfig(bpm=120, response_bars=64, **config))
    engine.prime(["C4", "D4"])
    engine.start()
    time.sleep(seconds)
    engine.stop()
    assert engine.join(5)
    assert engine.error is None
    return engine, sent


def test_engine_thread_sends_on_the_grid_without_drift():
    engine, sent = _timed_run(3.0)
    onsets = [t for t, m in sent if m.type == "note_on"]
    steps = sorted({round((t - engine.clock.anchor_time) / STEP) for t in onsets})
    errors = [abs(t - engine.clock.step_time(round((t - engine.clock.anchor_time) / STEP))) for t in onsets]
    assert len(steps) >= 10
    assert statistics.median(errors) < 0.002
    assert sorted(errors)[int(0.99 * (len(errors) - 1))] < 0.010  # loaded 2-core box margin
    assert engine.lookahead.late_steps == 0
    assert not engine.voices.sounding


def test_overload_skips_late_steps_and_keeps_the_grid():
    # every inference takes 300 ms, longer than a 250 ms grid step
    engine, sent = _timed_run(3.0, simulate_slow_ms=300)
    onsets = sorted({t for t, m in sent if m.type == "note_on"})
    assert engine.lookahead.late_steps >= 3
    assert 3 <= len(onsets) <= 7  # about every other step
    for t in onsets:  # still on the grid, never drifted
        step = round((t - engine.clock.anchor_time) / STEP)
        assert abs(t - engine.clock.step_time(step)) < 0.010
    gaps = [round((b - a) / STEP) for a, b in zip(onsets, onsets[1:])]
    assert all(gap >= 2 for gap in gaps)


class BrokenModel(FakeModel):
    """A model whose stepper raises from its fourth token on (an engine fault, not bad input)."""

    def stepper(self):
        stepper = super().stepper()
        calls = {"n": 0}
        advance = stepper.advance

        def failing(token):
            calls["n"] += 1
            if calls["n"] > 3:
                raise RuntimeError("inference failed")
            return advance(token)

        stepper.advance = failing
        return stepper


@pytest.mark.parametrize("clock", ["internal", "midi"])
def test_a_fault_in_the_engine_stops_it_on_every_clock_silent_and_recorded(clock, tmp_path):
    from lofi_live.session import Session

    sent = []
    session = Session(240, tmp_path / "s.mid")
    engine = Engine(BrokenModel(), Sampler(0, None, 0), send=sent.append, session=session,
                    config=EngineConfig(bpm=240, clock=clock, response_bars=64, gate=4, metronome=9, realtime=False))
    engine.prime(["C4"])
    engine.start()
    if clock == "midi":  # a DAW's clock at 240 BPM: Start, then ticks until the engine stops
        engine.on_message(mido.Message("start"))
        tick = 60 / 240 / 24
        ticks = 0
        while not engine.finished.is_set() and ticks < 24 * 40:
            engine.on_message(mido.Message("clock"))
            ticks += 1
            time.sleep(tick)
    assert engine.finished.wait(10)
    assert isinstance(engine.error, RuntimeError) and str(engine.error) == "inference failed"
    assert not engine.running
    ons = [(m.channel, m.note) for m in sent if m.type == "note_on"]
    offs = [(m.channel, m.note) for m in sent if m.type == "note_off"]
    assert ons and sorted(ons) == sorted(offs)
    assert {m.channel for m in sent if m.type == "control_change" and m.control == 123} == {0, 9}
    recorded = session.notes()["model"]
    assert len(recorded) == len([key for key in ons if key[0] == 0])  # every note the model played, ended
    assert all(note.duration > 0 for note in recorded)
    midi = mido.MidiFile(session.close())  # the .mid and its journal, complete
    track = next(t for t in midi.tracks if t.name == "model")
    assert len([m for m in track if m.type == "note_on" and m.velocity > 0]) == len(recorded)
    assert "end" in Path(f"{tmp_path / 's.mid'}.journal").read_text()


def test_midi_clock_mode_plays_on_boundary_ticks_stops_on_stop_resumes_on_continue():
    model = FakeModel()
    sent = []
    engine = Engine(model, Sampler(0, None, 0), send=lambda m: sent.append((engine.step, m)),
                    config=EngineConfig(clock="midi", response_bars=64, echo_ms=0, realtime=False))
    engine.start_worker()
    engine.prime(["C4"])
    tick = 60 / 90 / 24
    now = [0.0]

    def feed(kind, count=1, **fields):
        for _ in range(count):
            engine._handle(mido.Message(kind, **fields), now[0])
            if engine.lookahead.job is not None:
                engine.lookahead.job.done.wait(1)
            engine.voices.run_timers(now[0])
            if kind == "clock":
                now[0] += tick

    def played():
        return sorted({step for step, m in sent if m.type == "note_on"})

    feed("clock", 10)  # clock without Start: nothing plays
    assert played() == []
    feed("start")
    feed("clock", 49)  # ticks 0..48: boundaries at steps 0..4; the model enters at step 1
    assert played() == [1, 2, 3, 4]
    assert engine.clock.bpm == pytest.approx(90)
    feed("stop")
    assert not engine.voices.sounding  # Stop ends the model's notes at once
    feed("clock", 30)
    assert played() == [1, 2, 3, 4]  # silent while stopped
    feed("continue")
    feed("clock", 24)  # ticks 49..72: boundaries at 60 (step 5) and 72 (step 6)
    assert played() == [1, 2, 3, 4, 5, 6]
    feed("stop")
    feed("songpos", pos=16)  # 16 sixteenths = beat 4 = step 8
    feed("continue")
    feed("clock", 13)  # ticks 96..108: steps 8 and 9; tick 96 comes right after Continue, so the
    assert played() == [1, 2, 3, 4, 5, 6, 9]  # model (like after Start) enters one step later
    engine.worker.stop()


def test_mapped_control_changes_set_temperature_tempo_and_panic():
    from lofi_live.controls import ControlMap

    sim = Sim(response_bars=8)
    sim.engine.controls = ControlMap({"temperature": 21, "tempo": 22, "panic": 23, "mode": 24}, state_cc=30)
    sim.engine.prime(["0.4.7"])
    sim.engine.plan(0)
    sim.run(1)
    cc = lambda number, value: mido.Message("control_change", control=number, value=value)  # noqa: E731
    sim.engine._handle(cc(21, 127), 0.3)
    assert sim.engine.temperature == pytest.approx(2.0)  # the setting at once...
    assert sim.engine.sampler.temperature == 0.0  # ...the sampler (the inference thread's) from the next token
    sim.run(3)
    assert sim.engine.sampler.temperature == pytest.approx(2.0)
    sim.engine._handle(cc(22, 0), 0.8)
    assert sim.engine.clock.bpm == pytest.approx(60)
    assert dict(sim.engine.snapshot().cc_map)["temperature"] == 21
    assert sim.engine.voices.sounding
    sim.engine._handle(cc(23, 127), 0.8)  # panic: silence at once
    assert not sim.engine.voices.sounding
    assert any(m.type == "control_change" and m.control == 123 for _, m in sim.sent)
    sim.engine._handle(cc(24, 127), 0.8)
    assert sim.engine.conductor.mode == "accompany"
    # the engine announced its state on the state CC
    assert any(m.type == "control_change" and m.control == 30 for _, m in sim.sent)
    sim.close()


# ---------------------------------------------------------------------------------------------
# MIDI control actions (issue 7): mutate, loop, model_select, key lock, what the view shows

A_MINOR = {9, 11, 0, 2, 4, 5, 7}


def _cc(number, value):
    return mido.Message("control_change", control=number, value=value)


def _view_text(engine) -> str:
    import io

    from rich.console import Console

    from lofi_live.view import render

    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="standard")
    console.print(render(engine.snapshot()))
    return console.export_text()


def test_mutate_resamples_the_last_response_from_the_same_context():
    from lofi_live.controls import Action

    model = FakeModel(uniform=True)
    sim = Sim(model=model, sampler=Sampler(1.0, None, 5), response_bars=1)
    sim.engine.prime(["C4", "D4", "E4"])
    sim.engine.plan(0)
    sim.run(9)
    first = sim.engine.timeline.tokens("model")
    assert len(first) == 8 and sim.engine.conductor.last_response.context == ["C4", "D4", "E4"]
    resets = len(model.seen)
    sim.engine.apply(Action("mutate"))
    sim.run(30)
    second = sim.engine.timeline.tokens("model")[8:]
    assert sim.model_steps() == list(range(8)) + list(range(10, 18))  # a new 1-bar response from the next step
    assert len(second) == 8 and second != first
    assert model.seen[resets] == model.encode(["C4", "D4", "E4"])  # it answered the same context again
    assert sim.engine.conductor.last_response.context == ["C4", "D4", "E4"] and sim.engine.conductor.last_response.tokens == second
    assert sim.engine.conductor.state == "idle" and sim.engine.conductor.replay is None
    sim.close()


def test_loop_repeats_the_last_response_until_toggled_off():
    from lofi_live.controls import ControlMap

    sim = Sim(model=FakeModel(uniform=True), sampler=Sampler(1.0, None, 3), response_bars=1,
              controls=ControlMap({"loop": 29}))
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(9)
    first = sim.engine.timeline.tokens("model")
    sim.engine._handle(_cc(29, 127), 9 * STEP + 0.01)  # loop on
    sim.engine._handle(_cc(29, 0), 9 * STEP + 0.02)
    sim.run(29)
    assert sim.engine.timeline.tokens("model")[8:] == (first * 3)[:20]  # steps 10..29: the response, again and again
    assert sim.engine.snapshot().loop is True and "loop on" in _view_text(sim.engine)
    sim.engine._handle(_cc(29, 127), 29 * STEP + 0.01)  # loop off
    sim.run(45)
    assert max(sim.model_steps()) == 29 and sim.engine.conductor.state == "idle"
    assert sim.engine.conductor.last_response.tokens == first  # looping did not replace the response
    sim.close()


def test_model_select_switches_models_between_steps_and_reencodes_the_window(tmp_path):
    from model_fixtures import build_model

    from lofi_live.controls import ControlMap
    from lofi_live.model import Model

    low_vocabulary = ["C2", "D2", "E2", "F2", "G2", "A2", "B2", "C3", "0.4.7", "9.0.4"]
    first = Model.load(build_model(tmp_path / "a", name="tiny"))
    second = Model.load(build_model(tmp_path / "b", low_vocabulary, name="low", seed=1))
    sim = Sim(model=first, models=[first, second], sampler=Sampler(0.9, None, 1), response_bars=4,
              controls=ControlMap({"model_select": 24}, n_models=2))
    sim.engine.prime(["C4", "D4", "E4"])
    sim.engine.plan(0)
    sim.run(5)
    sim.engine._handle(_cc(24, 127), 5 * STEP + 0.01)  # the top half of the knob: model 2
    assert sim.engine.model is first  # not before the next boundary
    sim.run(20)
    engine = sim.engine
    assert engine.model is second and engine.snapshot().model == "low"
    by_step = {entry.step: entry.token for entry in engine.timeline.entries if entry.part == "model"}
    assert all(by_step[s] in first.vocabulary for s in range(0, 7))  # step 6 was computed before the switch
    assert all(by_step[s] in low_vocabulary for s in range(7, 21))
    window = list(engine.timeline.entries)[-second.window :]  # the window speaks the new vocabulary:
    assert [e.index for e in window if e.part == "seed"] == [7, 7, 7]  # C4 D4 E4 -> C3, the nearest low note
    for entry in window:
        if entry.token in low_vocabulary:  # a token both know keeps its meaning
            assert entry.index == low_vocabulary.index(entry.token)
    assert "model low" in _view_text(engine)
    engine._handle(_cc(24, 0), 21 * STEP)  # and back
    sim.run(24)
    assert engine.model is first
    sim.close()


def test_key_auto_detects_the_played_key_and_a_cc_toggles_the_lock():
    from lofi_live.controls import ControlMap

    vocabulary = ["A4", "B4", "C5", "C#5", "D5", "E5", "F5", "F#5", "G5", "G#5", "0.4.7", "1.5.8"]
    sim = Sim(model=FakeModel(vocabulary), key="auto", scale="minor", wait_beats=1, response_bars=2,
              controls=ControlMap({"key_lock": 26}, key_lock=True))
    sim.run(40, phrase([69, 72, 76, 69, 64, 69, 71, 72, 69]))  # A C E A E A B C A, then silence
    engine = sim.engine
    assert engine.keylock.name == "A minor" and "key A minor" in _view_text(engine)
    played = engine.timeline.tokens("model")
    assert len(played) >= 8
    assert all(token_rules.token_pitch_classes(t) <= A_MINOR for t in played)
    engine._handle(_cc(26, 127), 40 * STEP + 0.01)  # lock off
    assert engine.snapshot().key is None and "key free" in _view_text(engine)
    engine._handle(_cc(26, 0), 40 * STEP + 0.02)
    engine._handle(_cc(26, 127), 40 * STEP + 0.03)  # and on again
    assert engine.snapshot().key == "A minor"
    sim.close()


def test_500_engine_steps_with_key_a_minor_use_only_a_minor_pitch_classes(tmp_path):
    from model_fixtures import VOCABULARY as TINY_VOCABULARY, build_model

    from lofi_live.model import Model

    model = Model.load(build_model(tmp_path))
    assert any(not token_rules.token_pitch_classes(t) <= A_MINOR for t in TINY_VOCABULARY)  # the lock has work to do
    sim = Sim(model=model, sampler=Sampler(1.5, None, 2), key="A", scale="minor", response_bars=64)
    sim.engine.prime(["C#4", "1.5.8", "E-4"])  # a context far from A minor
    sim.engine.plan(0)
    sim.run(501)
    played = sim.engine.timeline.tokens("model")
    assert len(played) >= 500
    outside = [t for t in played if not token_rules.token_pitch_classes(t) <= A_MINOR]
    assert outside == []
    assert len(set(played)) >= 8  # sampled, not one token over and over
    sim.close()


def test_control_changes_take_effect_and_show_in_the_view():
    from lofi_live.controls import ControlMap

    controls = ControlMap({"temperature": 21, "tempo": 22, "response_bars": 23, "mode": 25, "key_lock": 26})
    sim = Sim(controls=controls, response_bars=4)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(1)
    engine = sim.engine
    text = _view_text(engine)
    assert "temperature 0.00" in text and "120.0 BPM" in text and "response 4 bars" in text and "key free" in text
    for number, value in ((21, 127), (22, 0), (23, 127), (25, 127), (26, 127)):
        engine._handle(_cc(number, value), 0.3)
    text = _view_text(engine)
    for expected in ("temperature 2.00", "60.0 BPM", "response 16 bars", "mode accompany", "key auto"):
        assert expected in text, (expected, text)
    assert engine.temperature == pytest.approx(2.0) and engine.clock.bpm == pytest.approx(60)
    assert engine.config.response_bars == 16 and engine.conductor.mode == "accompany" and engine.keylock.enabled
    # the grid follows the new tempo: a step is 0.5 s at 60 BPM
    assert engine.clock.step_time(3) - engine.clock.step_time(2) == pytest.approx(0.5)
    sim.close()


def test_panic_cc_silences_everything_and_the_engine_waits_for_the_player():
    from lofi_live.controls import ControlMap

    sim = Sim(controls=ControlMap({"panic": 27, "loop": 29}), response_bars=8, thru=True, gate=4)
    sim.engine.prime(["0.4.7", "C4"])
    sim.engine.plan(0)
    sim.run(3, [(0.3, on(50, channel=3))])  # a played note held through (thru)
    engine = sim.engine
    engine._handle(_cc(29, 127), 0.8)  # loop on: panic must end it too
    sounding = set(engine.voices.sounding)
    assert (3, 50) in sounding and len(sounding) >= 3
    before = len(sim.sent)
    engine._handle(_cc(27, 127), 0.9)
    after = [m for _, m in sim.sent[before:]]
    assert {(m.channel, m.note) for m in after if m.type == "note_off"} == sounding
    assert {m.channel for m in after if m.type == "control_change" and m.control == 123} >= {0, 3}
    assert not engine.voices.sounding and engine.conductor.replay is None and engine.conductor.state == "idle"
    sim.run(12)
    assert max(sim.model_steps()) <= 3  # silent afterwards...
    sim.run(30, phrase([60, 62], start_step=13))
    assert max(sim.model_steps()) > 13  # ...until the player plays and stops again
    sim.close()


def test_a_tempo_control_lands_in_the_recorded_mid_at_the_beat_it_came(tmp_path):
    from lofi_live.controls import ControlMap
    from lofi_live.session import Session

    session = Session(120, tmp_path / "tempo.mid", journal=False)
    sim = Sim(controls=ControlMap({"tempo": 22}), response_bars=1, session=session)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(4)
    sim.engine._handle(_cc(22, 0), 1.25)  # the tempo knob to 60 BPM at 1.25 s = beat 2.5 (at 120 BPM)
    assert sim.engine.clock.beat_at(1.25) == pytest.approx(2.5)
    assert sim.engine.clock.beat_at(2.25) == pytest.approx(3.5)  # one beat a second from there on
    sim.close()
    midi = mido.MidiFile(session.close())
    tick, tempos = 0, []
    for message in midi.tracks[0]:
        tick += message.time
        if message.type == "set_tempo":
            tempos.append((tick, message.tempo))
    assert tempos == [(0, 500_000), (int(2.5 * midi.ticks_per_beat), 1_000_000)]


def test_accompany_mode_shows_responding_whenever_the_model_plays():
    sim = Sim(mode="accompany", response_bars=1)
    engine = sim.engine
    shown = {}
    events = phrase([60, 62, 64, 65, 67, 69, 71, 72])
    for step in range(30):
        sim.run(step, [e for e in events if (step - 1) * STEP < e[0] <= step * STEP])
        shown[step] = engine.snapshot().state
    played = set(sim.model_steps())
    assert played and all(shown[step] == "responding" for step in played), (sorted(played), shown)
    assert shown[1] == "listening"  # the player plays, the model waits for the first token to close
    assert shown[29] == "idle"
    sim.close()


def test_an_echo_that_arrives_while_the_engine_thread_is_still_sending_is_recognised():
    """The loopback can deliver (and the input thread stamp) a note before ``send`` even returns on a busy
    machine: the engine notes what it sends before sending, so such an echo is still its own."""
    from lofi_live.clock import InternalClock
    from lofi_live.voices import Voices

    guard = FeedbackGuard(0.03)
    arrivals: list[tuple[float, mido.Message]] = []

    def looped_port(message: mido.Message) -> None:
        arrivals.append((time.perf_counter(), message))  # the echo, stamped on arrival
        time.sleep(0.005)  # the sending thread descheduled before send returns

    voices = Voices(looped_port, guard, InternalClock(120.0), max_note_beats=8.0, channels={0})
    voices.note_on(0, 60, 90, "model", None)
    voices.note_off((0, 60), time.perf_counter(), None)
    assert [guard.is_echo(stamp, m.type == "note_on", m.channel, m.note, m.velocity) for stamp, m in arrivals] == [True, True]
