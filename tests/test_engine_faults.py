"""Faults of a live session that must be seen, not hidden, each checked on the engine itself:
All Notes Off / All Sound Off and a lost key releasing the player's held keys, a note-on the
transport delivers twice, and a shutdown that never reaches into a thread that is still running."""

from __future__ import annotations

import threading
import time

import mido
import pytest

from engine_fakes import FakeModel
from engine_sim import STEP, Sim, off, on, phrase
from lofi_live.commands.run import _stop_engine
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.model.sampling import Sampler
from lofi_live.recording.session import Session
from lofi_live.tokens import rules as token_rules


def cc(control: int, channel: int = 0, value: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=channel, control=control, value=value)


def _model_ons(sim: Sim, since: int = 0) -> list[int]:
    return [step for step, m in sim.sent[since:] if m.type == "note_on" and m.velocity > 0 and m.note not in (76, 77)]


@pytest.mark.parametrize("control", [123, 120])
def test_all_notes_off_on_the_input_releases_the_held_keys_and_the_phrase_ends(control):
    """A key whose note-off was lost holds the phrase open for ever; the DAW's All Notes Off (CC 123) or
    All Sound Off (CC 120) on that channel releases it: recorded as a note-off, and the model answers."""
    session = Session(120, None, journal=False)
    sim = Sim(session=session, response_bars=1)
    # C4 and E4 played; E4's note-off never arrives; a key on channel 2 is held too
    sim.run(12, phrase([60]) + [(0.3, on(64)), (0.35, on(67, channel=1))])
    assert _model_ons(sim) == [], "a key held down keeps the phrase open"
    assert set(sim.engine.player.held) == {(0, 64), (1, 67)}
    sim.engine._handle(cc(control, channel=0), 12 * STEP + 0.01)
    assert set(sim.engine.player.held) == {(1, 67)}  # only that channel's keys
    notes = {note.pitch: note for note in session.notes(end_beat=100)["player"]}
    assert notes[64].start + notes[64].duration == pytest.approx((12 * STEP + 0.01) * 2)  # its note-off, recorded
    sim.engine._handle(cc(control, channel=1), 12 * STEP + 0.02)
    assert not sim.engine.player.held
    sim.run(30)
    assert _model_ons(sim), "the phrase ended: the model answers"
    sim.close()


def test_the_engines_own_all_notes_off_coming_back_releases_nothing():
    sim = Sim(echo_ms=30)
    sim.run(2, [(0.1, on(60))])
    sim.engine.voices.all_notes_off()  # sent now: its echo arrives within the echo window
    sim.engine._handle(cc(123), time.perf_counter() + 0.002)
    assert set(sim.engine.player.held) == {(0, 60)}
    sim.close()


def test_a_note_on_delivered_twice_within_5_ms_is_one_note_in_the_recording_and_the_tokens():
    """Seen over JACK: a held chord's note-on delivered twice 2 ms apart was recorded as a re-strike,
    a 0.002-beat note beside the real one."""
    session = Session(120, None, journal=False)
    sim = Sim(session=session, response_bars=1, wait_beats=4)
    sim.run(3, [(0.1, on(60)), (0.1, on(64)), (0.102, on(64)), (0.103, on(60)), (0.4, off(60)), (0.4, off(64)),
                (0.41, off(64))])  # the duplicated note-off that follows is an orphan, ignored
    notes = session.notes()["player"]
    assert sorted(note.pitch for note in notes) == [60, 64]
    assert all(note.duration == pytest.approx(0.6) for note in notes)
    chord = sim.model.vocabulary[sim.model.encode([token_rules.onset_token([60, 64])])[0]]
    assert sim.engine.responder.timeline.tokens("player") == [chord]  # one onset token, nothing re-struck
    # a real re-strike, later than 5 ms, is two notes
    sim.run(8, [(1.0, on(62)), (1.1, on(62)), (1.3, off(62))])
    assert [note.pitch for note in session.notes()["player"]].count(62) == 2
    sim.close()


def _held_without_input(lost_key_bars: float | None, until: int) -> tuple[Sim, Session]:
    session = Session(120, None, journal=False)
    config = {} if lost_key_bars is None else {"lost_key_bars": lost_key_bars}
    sim = Sim(session=session, response_bars=1, **config)
    sim.run(until, phrase([60, 62]) + [(0.6, on(64))])  # E4's note-off never comes; nothing else either
    return sim, session


def test_a_key_held_8_bars_with_no_input_is_taken_as_lost_said_once_and_released(caplog):
    # 8 bars = 32 beats = 64 steps at 120 BPM after the last input (beat 1.2)
    sim, session = _held_without_input(None, 66)
    assert set(sim.engine.player.held) == {(0, 64)} and _model_ons(sim) == []
    sim.run(67)
    assert not sim.engine.player.held
    lost = [r for r in caplog.records if "taken as lost" in r.getMessage()]
    assert len(lost) == 1 and "8 bars" in lost[0].getMessage()
    notes = {note.pitch: note for note in session.notes(end_beat=1000)["player"]}
    assert notes[64].start + notes[64].duration == pytest.approx(67 * 0.5)  # released there, recorded
    sim.run(90)
    assert _model_ons(sim), "the instrument answers again"
    sim.close()


def test_lost_key_bars_is_configurable():
    sim, _ = _held_without_input(2, 12)  # 2 bars = 16 steps after beat 1.2: step 19
    assert sim.engine.player.held
    sim.run(19)
    assert not sim.engine.player.held
    sim.close()


def test_a_stuck_engine_thread_is_never_reached_into_at_shutdown():
    """The engine thread blocked in its output (a hung driver): stopping it times out, and the main
    thread then neither releases the engine's notes (its state) nor reads its figures; All Notes Off
    goes straight to the port on every channel."""
    blocked = threading.Event()
    release = threading.Event()
    callers: list[str] = []

    def engine_send(message: mido.Message) -> None:
        callers.append(threading.current_thread().name)
        if message.type == "note_on":
            blocked.set()
            release.wait(10)

    port: list[mido.Message] = []
    engine = Engine(FakeModel(), Sampler(0, None, 0), send=engine_send,
                    config=EngineConfig(bpm=240, response_bars=4, realtime=False, start_delay=0.01))
    engine.prime(["C4", "D4"])
    engine.start()
    try:
        assert blocked.wait(5), "the engine played a note and is stuck sending it"
        assert _stop_engine(engine, port.append, seconds=0.3) is False
        assert set(callers) == {"lofi-engine"}  # nothing sent through the engine from this thread
        assert [(m.control, m.channel) for m in port] == [(123, channel) for channel in range(16)]
        with pytest.raises(RuntimeError):
            engine.stats()
        with pytest.raises(RuntimeError):
            engine.panic()
    finally:
        release.set()
    assert engine.join(5)
    assert engine.stats()["played_steps"] >= 1  # readable once the thread has ended
