"""The bar line live (lofi_live.live.bars wired into the engine): every token the model reads comes with its
step's position in the bar, and in continue mode the answer starts on a bar line.

The engine runs on a simulated clock (tests/engine_sim.py) at 120 BPM: a grid step is 0.25 s.
"""

from __future__ import annotations

from engine_fakes import grid_model, position_model
from engine_sim import STEP, Sim, off, on

#: C4 answers anything; the fake's answer after C4 is D4, then rests.
FOLLOW = {"C4": "D4", "D4": "rest", "rest": "C4", "hold": "rest", "0.4.7": "C4"}


def test_without_metronome_the_players_first_onset_is_beat_one_and_each_token_reads_its_position():
    model = position_model(FOLLOW)
    sim = Sim(model=model, wait_beats=2, response_bars=1)
    start = 3 * STEP  # the player starts on step 3 of the engine's grid
    sim.run(24, [(start + 0.001, on(60)), (start + 0.2, off(60))])
    steps = sim.model_steps()
    # the wait ends 2 beats after the note-off (step 8); the next bar line counted from step 3 is step 11
    assert steps[0] == 11
    entries = [e for e in sim.engine.responder.timeline.entries]
    assert entries[0].step == 3 and entries[0].token == "C4"
    stepper = model.steppers[-1]
    read = [e.step for e in entries][: len(stepper.positions)]
    assert stepper.positions == [(step - 3) % 8 for step in read]
    sim.close()


def test_with_the_metronome_the_bar_is_the_metronomes_from_step_0():
    model = position_model(FOLLOW)
    sim = Sim(model=model, wait_beats=2, response_bars=1, metronome=9)
    start = 5 * STEP
    sim.run(24, [(start + 0.001, on(60)), (start + 0.2, off(60))])
    model_steps = sorted({step for step, m in sim.sent if m.type == "note_on" and m.channel == 0})
    assert model_steps[0] == 16  # the wait ends at step 10; the metronome's bar lines: 0, 8, 16
    stepper = model.steppers[-1]
    read = [e.step for e in sim.engine.responder.timeline.entries][: len(stepper.positions)]
    assert stepper.positions == [step % 8 for step in read]
    sim.close()


def test_a_model_without_positions_is_fed_tokens_alone():
    model = grid_model(FOLLOW)  # its stepper takes reset(window) and advance(token) only
    sim = Sim(model=model, wait_beats=2, response_bars=1)
    sim.run(24, [(3 * STEP + 0.001, on(60)), (3 * STEP + 0.2, off(60))])
    assert sim.model_steps()[0] == 11
    sim.close()


def test_accompany_mode_does_not_wait_for_the_bar_line():
    sim = Sim(model=position_model(FOLLOW), mode="accompany", response_bars=1)
    sim.run(8, [(3 * STEP + 0.001, on(60)), (3 * STEP + 0.2, off(60))])
    assert sim.model_steps()[0] == 4  # the C4 closes half a step after step 3: the model joins at once
    sim.close()


#: The fake network answers F4 to anything: not a note of the loop below.
ALWAYS_F4 = {token: "F4" for token in ("C4", "D4", "E4", "F4", "G4", "0.4.7", "9.0.4", "hold", "rest")}
#: A one-bar loop, played twice: C4, E4, G4, E4 on the beats (each shorter than a step).
LOOP = [(bar * 8 + 2 * beat) * STEP for bar in range(2) for beat in range(4)]
PITCHES = [60, 64, 67, 64] * 2


def _play_loop(sim: Sim, until: int) -> None:
    events = []
    for at, pitch in zip(LOOP, PITCHES):
        events += [(at + 0.001, on(pitch)), (at + 0.2, off(pitch))]
    sim.run(until, events)


def _model_notes(sim: Sim) -> list[tuple[int, int]]:
    return [(step, m.note) for step, m in sim.sent if m.type == "note_on" and m.velocity > 0 and m.channel == 0]


def test_in_continue_mode_the_answer_follows_the_heard_loop_at_variation_0():
    sim = Sim(model=grid_model(ALWAYS_F4), wait_beats=2, response_bars=1, follow="chord", variation=0.0)
    _play_loop(sim, 34)
    # the loop ends at step 16 (a bar line); the wait ends at step 20; the answer starts on the bar line at 24
    # and replays the loop from its start, although the network alone would play F4
    assert _model_notes(sim)[:4] == [(24, 60), (26, 64), (28, 67), (30, 64)]
    sim.close()


def test_with_follow_off_the_network_alone_answers():
    sim = Sim(model=grid_model(ALWAYS_F4), wait_beats=2, response_bars=1, follow="off", variation=0.0)
    _play_loop(sim, 30)
    assert _model_notes(sim)[0] == (24, 65)  # F4, on the bar line
    sim.close()


def test_the_variation_control_reaches_the_copy_gate_and_the_view():
    from lofi_live.live.controls import Action

    model = position_model(FOLLOW)
    sim = Sim(model=model, wait_beats=2, response_bars=2, variation=0.3)
    sim.run(12, [(0.001, on(60)), (0.2, off(60))])
    stepper = model.steppers[-1]
    assert stepper.variations and set(stepper.variations) == {0.3}  # --variation from the first prediction
    sim.engine.apply(Action("variation", 0.9))
    assert sim.engine.snapshot().variation == 0.9
    sim.run(20)
    assert stepper.variations[-1] == 0.9  # from the next token on
    sim.close()
