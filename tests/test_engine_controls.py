"""MIDI control of the engine: mutate, loop, model select, key lock, panic, tempo, and what the view shows.

Driven by hand on a simulated clock as in tests/test_engine_unit.py (120 BPM: a grid step is 0.25 s).
"""

from __future__ import annotations


import mido
import pytest

from engine_fakes import FakeModel
from engine_sim import STEP, Sim, on, phrase
from lofi_live.tokens import rules as token_rules
from lofi_live.model.sampling import Sampler

# ---------------------------------------------------------------------------------------------
# MIDI control actions (issue 7): mutate, loop, model_select, key lock, what the view shows

A_MINOR = {9, 11, 0, 2, 4, 5, 7}


def _cc(number, value):
    return mido.Message("control_change", control=number, value=value)


def _view_text(engine) -> str:
    import io

    from rich.console import Console

    from lofi_live.live.view import render

    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="standard")
    console.print(render(engine.snapshot()))
    return console.export_text()


def test_mutate_resamples_the_last_response_from_the_same_context():
    from lofi_live.live.controls import Action

    model = FakeModel(uniform=True)
    sim = Sim(model=model, sampler=Sampler(1.0, None, 5), response_bars=1)
    sim.engine.prime(["C4", "D4", "E4"])
    sim.engine.plan(0)
    sim.run(9)
    first = sim.engine.responder.timeline.tokens("model")
    assert len(first) == 8 and sim.engine.conductor.last_response.context == ["C4", "D4", "E4"]
    resets = len(model.seen)
    sim.engine.apply(Action("mutate"))
    sim.run(30)
    second = sim.engine.responder.timeline.tokens("model")[8:]
    assert sim.model_steps() == list(range(8)) + list(range(10, 18))  # a new 1-bar response from the next step
    assert len(second) == 8 and second != first
    assert model.seen[resets] == model.encode(["C4", "D4", "E4"])  # it answered the same context again
    assert sim.engine.conductor.last_response.context == ["C4", "D4", "E4"] and sim.engine.conductor.last_response.tokens == second
    assert sim.engine.conductor.state == "idle" and sim.engine.conductor.replay is None
    sim.close()


def test_loop_repeats_the_last_response_until_toggled_off():
    from lofi_live.live.controls import ControlMap

    sim = Sim(model=FakeModel(uniform=True), sampler=Sampler(1.0, None, 3), response_bars=1,
              controls=ControlMap({"loop": 29}))
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(9)
    first = sim.engine.responder.timeline.tokens("model")
    sim.engine._handle(_cc(29, 127), 9 * STEP + 0.01)  # loop on
    sim.engine._handle(_cc(29, 0), 9 * STEP + 0.02)
    sim.run(29)
    assert sim.engine.responder.timeline.tokens("model")[8:] == (first * 3)[:20]  # steps 10..29: the response, again and again
    assert sim.engine.snapshot().loop is True and "loop on" in _view_text(sim.engine)
    sim.engine._handle(_cc(29, 127), 29 * STEP + 0.01)  # loop off
    sim.run(45)
    assert max(sim.model_steps()) == 29 and sim.engine.conductor.state == "idle"
    assert sim.engine.conductor.last_response.tokens == first  # looping did not replace the response
    sim.close()


def test_model_select_switches_models_between_steps_and_reencodes_the_window(tmp_path):
    from model_fixtures import build_model

    from lofi_live.live.controls import ControlMap
    from lofi_live.model.loader import Model

    low_vocabulary = ["C2", "D2", "E2", "F2", "G2", "A2", "B2", "C3", "0.4.7", "9.0.4"]
    first = Model.load(build_model(tmp_path / "a", name="tiny"))
    second = Model.load(build_model(tmp_path / "b", low_vocabulary, name="low", seed=1))
    sim = Sim(model=first, models=[first, second], sampler=Sampler(0.9, None, 1), response_bars=4,
              controls=ControlMap({"model_select": 24}, n_models=2))
    sim.engine.prime(["C4", "D4", "E4"])
    sim.engine.plan(0)
    sim.run(5)
    sim.engine._handle(_cc(24, 127), 5 * STEP + 0.01)  # the top half of the knob: model 2
    assert sim.engine.responder.model is first  # not before the next boundary
    sim.run(20)
    engine = sim.engine
    assert engine.responder.model is second and engine.snapshot().model == "low"
    by_step = {entry.step: entry.token for entry in engine.responder.timeline.entries if entry.part == "model"}
    assert all(by_step[s] in first.vocabulary for s in range(0, 7))  # step 6 was computed before the switch
    assert all(by_step[s] in low_vocabulary for s in range(7, 21))
    window = list(engine.responder.timeline.entries)[-second.window :]  # the window speaks the new vocabulary:
    assert [e.index for e in window if e.part == "seed"] == [7, 7, 7]  # C4 D4 E4 -> C3, the nearest low note
    for entry in window:
        if entry.token in low_vocabulary:  # a token both know keeps its meaning
            assert entry.index == low_vocabulary.index(entry.token)
    assert "model low" in _view_text(engine)
    engine._handle(_cc(24, 0), 21 * STEP)  # and back
    sim.run(24)
    assert engine.responder.model is first
    sim.close()


def test_key_auto_detects_the_played_key_and_a_cc_toggles_the_lock():
    from lofi_live.live.controls import ControlMap

    vocabulary = ["A4", "B4", "C5", "C#5", "D5", "E5", "F5", "F#5", "G5", "G#5", "0.4.7", "1.5.8"]
    sim = Sim(model=FakeModel(vocabulary), key="auto", scale="minor", wait_beats=1, response_bars=2,
              controls=ControlMap({"key_lock": 26}, key_lock=True))
    sim.run(40, phrase([69, 72, 76, 69, 64, 69, 71, 72, 69]))  # A C E A E A B C A, then silence
    engine = sim.engine
    assert engine.responder.keylock.name == "A minor" and "key A minor" in _view_text(engine)
    played = engine.responder.timeline.tokens("model")
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

    from lofi_live.model.loader import Model

    model = Model.load(build_model(tmp_path))
    assert any(not token_rules.token_pitch_classes(t) <= A_MINOR for t in TINY_VOCABULARY)  # the lock has work to do
    sim = Sim(model=model, sampler=Sampler(1.5, None, 2), key="A", scale="minor", response_bars=64)
    sim.engine.prime(["C#4", "1.5.8", "E-4"])  # a context far from A minor
    sim.engine.plan(0)
    sim.run(501)
    played = sim.engine.responder.timeline.tokens("model")
    assert len(played) >= 500
    outside = [t for t in played if not token_rules.token_pitch_classes(t) <= A_MINOR]
    assert outside == []
    assert len(set(played)) >= 8  # sampled, not one token over and over
    sim.close()


def test_control_changes_take_effect_and_show_in_the_view():
    from lofi_live.live.controls import ControlMap

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
    assert engine.responder.temperature == pytest.approx(2.0) and engine.clock.bpm == pytest.approx(60)
    assert engine.config.response_bars == 16 and engine.conductor.mode == "accompany" and engine.responder.keylock.enabled
    # the grid follows the new tempo: a step is 0.5 s at 60 BPM
    assert engine.clock.step_time(3) - engine.clock.step_time(2) == pytest.approx(0.5)
    sim.close()


def test_panic_cc_silences_everything_and_the_engine_waits_for_the_player():
    from lofi_live.live.controls import ControlMap

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
    from lofi_live.live.controls import ControlMap
    from lofi_live.recording.session import Session

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


def test_a_tempo_control_applied_late_moves_no_beat_already_read():
    """The engine thread may drain a control well after it arrived (a loaded machine): the grid then
    re-anchors when it is applied, so a beat read meanwhile under the old tempo never jumps."""
    import time

    from lofi_live.live.controls import ControlMap
    from lofi_live.live.engine import Engine, EngineConfig

    engine = Engine(FakeModel(), Sampler(0.0, None, 1), send=lambda m: None, controls=ControlMap({"tempo": 22}),
                    config=EngineConfig(bpm=60, realtime=False))
    engine.clock.start(time.perf_counter() - 10.0)
    arrived = time.perf_counter() - 0.2  # it waited 200 ms on the queue
    t0 = time.perf_counter()
    b0 = engine.clock.beat_at(t0)
    engine.intake.queue.put((arrived, _cc(22, 127)))  # to 180 BPM
    engine._drain(time.perf_counter() + 0.01)
    t1 = time.perf_counter()
    b1 = engine.clock.beat_at(t1)
    assert engine.clock.bpm == pytest.approx(180)
    # at most 180 BPM between the two readings (anchored at its arrival, it jumped 0.4 beat ahead)
    assert 0 <= b1 - b0 <= (t1 - t0) * 3 + 1e-6, (b0, b1)


def test_the_live_key_lock_and_generate_s_are_one_rule():
    """--key auto --scale dorian: generate and the live engine lock the same tokens for the same notes."""
    from lofi_live.commands.generate import scale_lock

    vocabulary = ["A4", "B4", "C5", "C#5", "D5", "E5", "F5", "F#5", "G5", "G#5", "0.4.7", "1.5.8"]
    heard = ["A4", "C5", "E5", "A4", "E5", "A4", "B4", "C5", "A4"]
    for scale in (None, "dorian"):
        sim = Sim(model=FakeModel(vocabulary), key="auto", scale=scale)
        for token in heard:
            sim.engine.responder.timeline.append(0, "player", token, vocabulary.index(token))
        live = sim.engine.responder.keylock.mask(sim.engine.responder.timeline)
        offline = scale_lock(FakeModel(vocabulary), "auto", scale, heard)
        assert list(live) == list(offline.mask)
        assert sim.engine.responder.keylock.name == ("A minor" if scale is None else "A dorian")
        sim.close()


def test_a_mapped_variation_knob_moves_the_variation_shown_and_sent_to_the_inference_thread():
    from lofi_live.live.controls import ControlMap

    sim = Sim(model=FakeModel(), response_bars=1, controls=ControlMap({"variation": 32}), variation=0.7)
    assert sim.engine.snapshot().variation == 0.7 and "variation 0.70" in _view_text(sim.engine)
    sim.engine._handle(_cc(32, 127), 0.01)
    assert sim.engine.snapshot().variation == 1.0 and "variation 1.00" in _view_text(sim.engine)
    sim.engine._handle(_cc(32, 0), 0.02)
    assert sim.engine.responder.variation == 0.0
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(2)
    assert sim.engine.responder.worker.variation == 0.0  # the inference thread's, from its next token
    sim.close()
