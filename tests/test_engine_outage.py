"""The engine while the MIDI system or a port is gone (lofi_live.live.outage), on a simulated clock.

The real processes (a JACK server stopped and started again, a player that quits, a synth that
vanishes) are tests/test_studio_faults_jack.py; here each rule is checked step by step.
"""

from __future__ import annotations

import time

import mido

from engine_sim import STEP, Sim, off, on, phrase
from lofi_live.live.outage import BACK_NOTICE_SECONDS
from lofi_live.midi.port_watch import PortEvent, returned_port, stable_name
from lofi_live.recording.session import Session

OUTPUT = "MIDI output 'Synth:in'"
INPUT = "MIDI input 'Keys:out'"


def _sim(**config) -> tuple[Sim, Session]:
    session = Session(120, None, journal=False)
    return Sim(session=session, response_bars=1, **config), session


def _model_ons(sim: Sim, since: int = 0) -> list[tuple[int, int]]:
    return [(step, m.note) for step, m in sim.sent[since:] if m.type == "note_on" and m.velocity > 0]


def test_while_the_output_is_gone_the_model_holds_and_owes_its_note_offs(tmp_path):
    sim, session = _sim(gate=4)  # seed-model notes 2 steps long: one sounds when the output goes
    sim.run(10, phrase([60, 62, 64]))
    assert _model_ons(sim), "the model answered the phrase"
    engine = sim.engine
    sounding = set(engine.voices.sounding)
    assert sounding
    engine._handle(PortEvent("lost", "output", OUTPUT), 10 * STEP + 0.01)
    status = engine.snapshot()
    assert status.notice.startswith(f"{OUTPUT} is gone: holding") and "Ctrl-C to stop" in status.notice
    assert not engine.voices.sounding and engine.outages.owed == sounding
    sent, count = len(sim.sent), engine.responder.timeline.count
    sim.run(30, phrase([65, 67], start_step=14))  # played meanwhile on an input that still works
    assert _model_ons(sim, sent) == []  # nothing generated while nobody hears it
    assert engine.responder.timeline.count == count  # nor enters the timeline
    window = engine.responder.timeline.window_tokens()
    engine._handle(PortEvent("back", "output", OUTPUT), 30 * STEP + 0.01)
    paid = [m for _, m in sim.sent[sent:]]
    assert {(m.channel, m.note) for m in paid if m.type == "note_off"} == sounding  # the owed note-offs
    assert any(m.type == "control_change" and m.control == 123 for m in paid)
    assert engine.responder.timeline.window_tokens() == window  # the window it had
    assert engine.snapshot().notice.startswith(f"{OUTPUT} is back: reconnected, All Notes Off sent; play a phrase")
    sim.run(50, phrase([69, 71], start_step=32))
    assert any(step > 33 for step, _ in _model_ons(sim, sent)), "it answers the next phrase"
    events = session.events()
    gap = [e.beat for e in events if e.kind == "gap"]
    back = [e.beat for e in events if e.kind == "back"]
    assert len(gap) == 1 and len(back) == 1 and gap[0] < back[0]
    model_on = [e.beat for e in events if e.kind == "on" and e.part == "model"]
    assert not [beat for beat in model_on if gap[0] < beat < back[0]]
    played = {e.pitch for e in events if e.kind == "on" and e.part == "player"}
    assert {65, 67} <= played  # the player's notes in the gap are kept
    notes = session.notes()
    assert all(note.duration > 0 for note in notes["player"])  # each got its note-off
    sim.close()


def test_a_key_held_through_the_gap_gets_its_note_off_recorded_whenever_it_comes():
    sim, session = _sim()
    sim.run(2, [(0.1, on(50))])
    engine = sim.engine
    engine._handle(PortEvent("lost", "output", OUTPUT), 2 * STEP)
    sim.run(6, [(1.2, on(52))])
    engine._handle(PortEvent("back", "output", OUTPUT), 6 * STEP)
    sim.run(10, [(2.0, off(50)), (2.1, off(52))])
    notes = {note.pitch: note for note in session.notes()["player"]}
    assert notes[50].start == 0.2 and notes[50].start + notes[50].duration == 4.0
    assert notes[52].start == 2.4 and notes[52].start + notes[52].duration == 4.2
    assert engine.odd.counts.get("orphan_off", 0) == 0
    sim.close()


def test_a_lost_input_ends_the_keys_held_down_and_the_model_plays_on():
    sim, session = _sim(gate=1)
    sim.run(6, phrase([60, 62, 64]) + [(1.0, on(48))])
    engine = sim.engine
    engine._handle(PortEvent("lost", "input", INPUT), 1.3)
    assert engine.snapshot().notice.startswith(f"{INPUT} is gone: the notes held down ended, the model plays on")
    notes = {note.pitch: note for note in session.notes()["player"]}
    assert notes[48].start + notes[48].duration == 2.6  # ended when the input went
    assert not engine.player.held
    sent = len(sim.sent)
    sim.run(20)
    assert _model_ons(sim, sent), "the model answers (the key no longer holds the phrase open)"
    engine._handle(PortEvent("back", "input", INPUT), 20 * STEP)
    assert engine.snapshot().notice == f"{INPUT} is back: reconnected; play on"
    sim.close()


def test_owed_note_offs_wait_for_the_output_when_the_system_returns_without_it():
    """The MIDI system back before the --out port: the note-offs it owes are not sent to a missing
    port; they go to the output when it is back, and the model holds until then."""
    sim, _ = _sim(gate=4)
    sim.run(10, phrase([60, 62, 64]))
    engine = sim.engine
    sounding = set(engine.voices.sounding)
    assert sounding, "a model note sounds when the system goes"
    engine._handle(PortEvent("lost", "system", "the JACK server"), 10 * STEP + 0.01)
    sent = len(sim.sent)
    engine._handle(PortEvent("back", "system", "the JACK server", (("output", OUTPUT),)), 12 * STEP)
    assert [m for _, m in sim.sent[sent:] if m.type == "note_off"] == []  # not to a port that is not there
    assert engine.outages.holding and engine.outages.owed == sounding
    assert engine.snapshot().notice.endswith(f"{OUTPUT} is not back yet; still holding")
    sim.run(16)
    assert _model_ons(sim, sent) == []
    engine._handle(PortEvent("back", "output", OUTPUT), 16 * STEP + 0.01)
    paid = [m for _, m in sim.sent[sent:]]
    assert {(m.channel, m.note) for m in paid if m.type == "note_off"} == sounding
    assert not engine.outages.holding and not engine.outages.owed
    sim.close()


def test_the_system_gone_under_midi_clock_stops_and_waits_for_the_daw():
    from engine_fakes import FakeModel
    from lofi_live.live.engine import Engine, EngineConfig
    from lofi_live.model.sampling import Sampler

    session = Session(120, None, journal=False)
    engine = Engine(FakeModel(), Sampler(0, None, 0), send=lambda m: None, session=session,
                    config=EngineConfig(clock="midi", response_bars=1, echo_ms=0, realtime=False))
    engine._handle(mido.Message("start"), 0.0)
    for tick in range(1, 30):
        engine._handle(mido.Message("clock"), tick * 0.02)
    assert engine.clock.running
    engine._handle(PortEvent("lost", "system", "the JACK server"), 0.7)
    assert not engine.clock.running
    assert "the MIDI clock stopped" in engine.snapshot().notice
    engine._handle(PortEvent("back", "system", "the JACK server"), 3.0)
    notice = engine.snapshot().notice
    assert notice.startswith("the JACK server is back: the ports are open again") and notice.endswith(
        "waiting for the DAW's Start or Continue")
    assert [e.kind for e in session.events() if e.kind in ("gap", "back")] == ["gap", "back"]


def test_what_came_back_is_shown_for_a_while_then_the_view_is_clear():
    sim, _ = _sim()
    engine = sim.engine
    engine._handle(PortEvent("lost", "output", OUTPUT), 0.1)
    engine._handle(PortEvent("back", "output", OUTPUT), 0.2)
    outages = engine.outages
    assert outages.shown(time.perf_counter()).startswith(f"{OUTPUT} is back")
    assert outages.shown(time.perf_counter() + BACK_NOTICE_SECONDS + 1) == ""
    sim.close()


def test_a_device_back_under_a_new_number_is_the_same_device():
    # ALSA numbers a port "client:port" anew when it is plugged in again; Windows MM its index
    old = "Keystation 49:Keystation 49 MIDI 1 20:0"
    assert stable_name(old, "alsa") == "Keystation 49:Keystation 49 MIDI 1"
    assert returned_port(old, "Keystation", ["Midi Through:Midi Through Port-0 14:0",
                                             "Keystation 49:Keystation 49 MIDI 1 24:0"], "alsa") == "Keystation 49:Keystation 49 MIDI 1 24:0"
    assert returned_port("USB Keys 1", "USB Keys", ["loopMIDI Port 0", "USB Keys 2"], "winmm") == "USB Keys 2"
    assert returned_port("Keys:out", "Keys:out", ["Other:out"], "jack") is None  # not back yet
    assert returned_port("Keys:out", "Keys", ["Keys:out", "Other:out"], "jack") == "Keys:out"
