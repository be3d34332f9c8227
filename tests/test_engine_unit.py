"""The engine without ports: played notes -> tokens, the window, modes, overload, panic, faults.

Most tests drive the engine by hand on a simulated clock (120 BPM: a grid step is 0.25 s): input
messages are handled at their time stamps and each grid boundary is called in order, after the
look-ahead token is ready. A few run the real engine thread for a couple of seconds. Input handling and the
feedback guard are in test_engine_intake.py, MIDI control in test_engine_controls.py.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import mido
import pytest

from engine_fakes import VOCABULARY, FakeModel
from engine_sim import STEP, Sim, off, on, phrase
from lofi_live.tokens import rules as token_rules
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.tokens.grid import onset_step
from lofi_live.live.timeline import OnsetSteps, Timeline
from lofi_live.model.sampling import Sampler

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
    assert tokenizer.close_due(0.25) == [(0, "player", token_rules.onset_token([60, 64, 67]))]
    assert tokenizer.close_due(0.75) == [(1, "player", "D4")]
    assert token_rules.onset_token([60, 64, 67]) == "0.4.7"


def test_played_tokens_enter_the_window_unknown_ones_mapped_to_the_nearest():
    sim = Sim()
    events = [(0.001, on(60)), (0.002, on(64)), (0.003, on(67)), (0.2, off(60)), (0.2, off(64)), (0.2, off(67, zero_velocity=True)),
              (0.251, on(61)), (0.45, off(61))]
    sim.run(3, events)
    # C E G -> the chord 0.4.7; C#4 is unknown -> its nearest known token: C4 (a semitone away,
    # like D4: the tie goes to the first in the vocabulary)
    assert sim.engine.responder.timeline.tokens("player") == ["0.4.7", "C4"]
    assert not sim.engine.player.held  # velocity-0 note-on released the G
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
    tokens = sim.engine.responder.timeline.tokens("model")
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
    # -> step 7 (beat 3.5) ends the wait; the answer starts on the next bar line, counted from the player's
    # first note (step 0): step 8
    assert sim.model_steps()[0] == 8
    sim.close()


def test_continue_mode_stops_at_once_when_the_player_comes_back():
    sim = Sim(mode="continue", wait_beats=2, response_bars=4)
    events = phrase([60, 62]) + phrase([64], start_step=10.2)
    sim.run(20, events)
    steps = sim.model_steps()
    # silence from beat 0.7 (last off at 0.45 s) -> the wait ends at step 6 (beat 3 >= 2.7); the answer
    # starts on the bar line after it (the bar counted from the player's first note, step 0): step 8
    assert steps[0] == 8
    # the player's note at step 10.2 cancels step 11 onwards; it ends at beat 5.5, so after
    # 2 silent beats (beat 7.5, step 15) the model answers again from the next bar line, step 16
    assert steps == [8, 9, 10] + list(range(16, 21))
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
    # one silent beat later (beat 11.2) the wait ends at step 23 (beat 11.5); the answer starts on the
    # next bar line counted from the player's note (step 0): step 24
    assert model_ons()[0] == 24
    sim.close()


#: Every pitch of an octave: the fake plays the next one, so five of its twelve tokens are outside C major.
CHROMATIC = [token_rules.midi_to_note(pitch) for pitch in range(60, 72)]
C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


def _key_lock_run(key):
    sim = Sim(model=FakeModel(CHROMATIC), response_bars=2, key=key, scale="major")
    sim.engine.prime(["C4"])  # unlocked, the fake goes on chromatically: C#4, D4, E-4, E4, ...
    sim.engine.plan(0)
    sim.run(16)
    tokens = sim.engine.responder.timeline.tokens("model")
    sim.close()
    return tokens


def test_key_lock_only_plays_tokens_of_the_scale():
    unlocked = _key_lock_run(None)
    assert any(not token_rules.token_pitch_classes(token) <= C_MAJOR for token in unlocked)  # the test can fail
    locked = _key_lock_run("C")
    assert len(locked) == len(unlocked) >= 12
    for token in locked:
        assert token_rules.token_pitch_classes(token) <= C_MAJOR


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
    assert engine.responder.lookahead.late_steps == 0
    assert not engine.voices.sounding


def test_overload_skips_late_steps_and_keeps_the_grid():
    # every inference takes 300 ms, longer than a 250 ms grid step
    engine, sent = _timed_run(3.0, simulate_slow_ms=300)
    onsets = sorted({t for t, m in sent if m.type == "note_on"})
    assert engine.responder.lookahead.late_steps >= 3
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
    from lofi_live.recording.session import Session

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
    engine = Engine(model, Sampler(0, None, 0), send=lambda m: sent.append((engine.scheduler.step, m)),
                    config=EngineConfig(clock="midi", response_bars=64, echo_ms=0, realtime=False))
    engine.start_worker()
    engine.prime(["C4"])
    tick = 60 / 90 / 24
    now = [0.0]

    def feed(kind, count=1, **fields):
        for _ in range(count):
            engine._handle(mido.Message(kind, **fields), now[0])
            due = engine.scheduler.emit_at()  # a step announced ahead: the loop sends it when due
            if due is not None and due <= now[0] + 1e-9:
                engine.boundary(engine.scheduler.due(), due)
            if engine.responder.lookahead.job is not None:
                engine.responder.lookahead.job.done.wait(1)
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
    before_stop = len(sent)
    feed("stop")
    assert not engine.voices.sounding  # Stop ends the model's notes at once, then All Notes Off on
    stopped = [m for _, m in sent[before_stop:]]  # the model's channel (a lost note-off ends too)
    assert stopped[-1].type == "control_change" and (stopped[-1].control, stopped[-1].channel) == (123, 0)
    assert all(m.type == "note_off" for m in stopped[:-1])
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
    engine.responder.worker.stop()


def test_mapped_control_changes_set_temperature_tempo_and_panic():
    from lofi_live.live.controls import ControlMap

    sim = Sim(response_bars=8)
    sim.engine.controls = ControlMap({"temperature": 21, "tempo": 22, "panic": 23, "mode": 24}, state_cc=30)
    sim.engine.prime(["0.4.7"])
    sim.engine.plan(0)
    sim.run(1)
    cc = lambda number, value: mido.Message("control_change", control=number, value=value)  # noqa: E731
    sim.engine._handle(cc(21, 127), 0.3)
    assert sim.engine.responder.temperature == pytest.approx(2.0)  # the setting at once...
    assert sim.engine.responder.sampler.temperature == 0.0  # ...the sampler (the inference thread's) from the next token
    sim.run(3)
    assert sim.engine.responder.sampler.temperature == pytest.approx(2.0)
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
