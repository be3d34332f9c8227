"""The engine with a grid model (one token per step, hold and rest), on a simulated clock.

The grid fake (tests/engine_fakes.py) plays what its table says follows the last tokens, so each
test knows the model's tokens in advance. 120 BPM: a step is 0.25 s, half a beat.
"""

from __future__ import annotations

from engine_fakes import GRID_VOCABULARY, FakeModel, grid_model
from engine_sim import STEP, Sim, off, on
from lofi_live.recording.session import Session

#: seed C4 -> a chord held two more steps, a rest, D4, E4 held one more step, a rest, D4 ...
ANSWER = {"C4": "0.4.7", "0.4.7": "hold", "0.4.7 hold": "hold", "hold hold": "rest", "rest": "D4",
          "D4": "E4", "E4": "hold", "E4 hold": "rest"}
CHORD = [48, 52, 55]  # 0.4.7 voiced from C3


def _by_step(sim: Sim, kind: str, channel: int = 0) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for step, m in sim.sent:
        is_on = m.type == "note_on" and m.velocity > 0
        if m.channel == channel and m.type in ("note_on", "note_off") and is_on == (kind == "on"):
            found.setdefault(step, []).append(m.note)
    return found


def _seeded(session=None, **config) -> Sim:
    sim = Sim(model=grid_model(ANSWER), session=session, response_bars=1, **config)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    return sim


def test_hold_keeps_notes_without_restrike_rest_releases_onset_restrikes():
    session = Session(120)
    sim = _seeded(session)
    sim.run(12)
    ons, offs = _by_step(sim, "on"), _by_step(sim, "off")
    assert {step: sorted(p) for step, p in ons.items()} == {0: CHORD, 4: [62], 5: [64]}
    assert {step: sorted(p) for step, p in offs.items()} == {3: CHORD, 5: [62], 7: [64]}
    # an onset releases the previous notes before it strikes: D4's note-off comes before E4's note-on
    at_five = [(m.type, m.note) for step, m in sim.sent if step == 5 and m.type in ("note_on", "note_off")]
    assert at_five == [("note_off", 62), ("note_on", 64)]
    assert sim.engine.responder.timeline.tokens("model") == ["0.4.7", "hold", "hold", "rest", "D4", "E4", "hold", "rest"]
    # the recording has the same durations: the chord 3 steps, D4 one step, E4 two
    notes = sorted((n.start, n.duration, n.pitch) for n in session.notes()["model"])
    assert notes == [(0.0, 1.5, 48), (0.0, 1.5, 52), (0.0, 1.5, 55), (2.0, 0.5, 62), (2.5, 1.0, 64)]
    sim.close()


def test_max_note_beats_bounds_a_held_note():
    follow = {"C4": "0.4.7", "0.4.7": "hold", "hold": "hold", "rest": "hold"}
    session = Session(120)
    sim = Sim(model=grid_model(follow), session=session, response_bars=2, max_note_beats=1)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(10)
    assert {step: sorted(p) for step, p in _by_step(sim, "on").items()} == {0: CHORD}  # held, never re-struck
    # 1 beat = 0.5 s later: the timer fires at t = 0.5 s, just before boundary 2 (so during step 1)
    assert {step: sorted(p) for step, p in _by_step(sim, "off").items()} == {1: CHORD}
    assert all(n.duration == 1.0 for n in session.notes()["model"])
    # what sounded is what the model hears: after the bound, the model's holds are silence
    assert sim.engine.responder.timeline.tokens("model")[:4] == ["0.4.7", "hold", "rest", "rest"]
    sim.close()


def test_a_held_chord_enters_the_timeline_as_an_onset_then_holds_and_silence_as_rests():
    sim = Sim(model=grid_model({"rest": "D4", "D4": "rest"}), wait_beats=2, response_bars=1)
    chord = [(0.001, on(p)) for p in (60, 64, 67)] + [(1.0, off(p)) for p in (60, 64, 67)]  # held 2 beats
    sim.run(10, chord)
    entries = list(sim.engine.responder.timeline.entries)
    assert [e.token for e in entries[:8]] == ["0.4.7", "hold", "hold", "hold", "rest", "rest", "rest", "rest"]
    assert [e.part for e in entries[:8]] == ["player"] * 8
    # the model answered after 2 silent beats (step 8) and read exactly those 8 steps
    assert sim.model_steps()[0] == 8
    hold, rest, chord_index = (GRID_VOCABULARY.index(t) for t in ("hold", "rest", "0.4.7"))
    assert sim.model.seen[0] == [chord_index, hold, hold, hold, rest, rest, rest, rest]
    sim.close()


def test_silence_enters_as_at_most_eight_rests_in_a_row():
    sim = Sim(model=grid_model({"rest": "D4", "D4": "rest"}), wait_beats=10, response_bars=1)
    sim.run(26, [(0.001, on(60)), (0.2, off(60))])  # C4, then 10 beats (20 steps) of silence
    tokens = sim.engine.responder.timeline.tokens()
    assert tokens[:10] == ["C4"] + ["rest"] * 8 + ["D4"]  # 23 silent steps, 8 of them kept
    # 10 beats after the note-off (beat 0.4) the wait ends at step 21; the answer starts on the next
    # bar line counted from the C4 (step 0): step 24
    assert sim.model_steps()[0] == 24
    sim.close()


def test_player_and_model_in_one_step_make_the_token_of_everything_that_sounded():
    sim = Sim(model=grid_model({"C4": "C4", "E4": "C4", "0.4.7": "C4", "rest": "C4"}), mode="accompany",
              response_bars=4)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(6, [(2 * STEP + 0.001, on(64)), (2 * STEP + 0.1, off(64))])  # E4 with the model's C4 at step 2
    by_step = {e.step: e for e in sim.engine.responder.timeline.entries if e.step >= 0}
    assert by_step[1].token == "C4" and by_step[1].part == "model"
    # C4 + E4 is the chord 0.4, unknown to the model: the nearest known token, 0.4.7
    assert by_step[2].token == "0.4.7" and by_step[2].part == "model"
    sim.close()


def test_a_seed_model_still_hears_only_onsets():
    sim = Sim(model=FakeModel(), wait_beats=2, response_bars=1)
    chord = [(0.001, on(p)) for p in (60, 64, 67)] + [(1.0, off(p)) for p in (60, 64, 67)]
    sim.run(10, chord)
    tokens = sim.engine.responder.timeline.tokens()
    assert tokens[:2] == ["0.4.7", "9.0.4"]  # the chord, then the model's answer from step 8
    assert "hold" not in tokens and "rest" not in tokens and sim.model_steps()[0] == 8
    sim.close()


def test_a_response_opens_with_an_onset_even_when_the_network_would_rest():
    """The pause before a response is the player's: the model's first step is a note or chord, never a rest
    or a hold, and from then on the network chooses (here: a rest after the chord)."""
    follow = {"C4": "rest", "rest": "rest", "hold": "rest", "0.4.7": "rest"}
    sim = Sim(model=grid_model(follow), response_bars=1)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(8)
    tokens = sim.engine.responder.timeline.tokens("model")
    assert tokens and tokens[0] not in ("rest", "hold"), tokens
    assert tokens[1:4] == ["rest", "rest", "rest"], tokens  # after the opening, the network's own rests
    assert _by_step(sim, "on"), "the response sounded nothing"
    sim.close()


def test_a_response_follows_the_grid_grammar_of_generate():
    """The one grammar (lofi_live.tokens.grid.GridGrammar): a response opens with an onset, holds only while
    it sounds (never right after a rest) and rests at most a bar (8 steps) in a row."""
    from lofi_live.tokens.notes import longest_run

    sim = Sim(model=grid_model({"C4": "rest", "rest": "hold", "hold": "hold"}), response_bars=2)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(17)
    tokens = sim.engine.responder.timeline.tokens("model")
    assert len(tokens) >= 12 and tokens[0] not in ("hold", "rest")
    assert all((before, after) != ("rest", "hold") for before, after in zip(tokens, tokens[1:])), tokens
    sim.close()

    sim = Sim(model=grid_model({"C4": "rest", "rest": "rest"}), response_bars=2)
    sim.engine.prime(["C4"])
    sim.engine.plan(0)
    sim.run(17)
    steps = [step for step, m in sim.sent if m.type == "note_on" and m.velocity]  # the model's onsets
    assert steps[0] == 0
    assert any(step > 8 for step in steps), "after 8 rests the response plays again"
    silent = [step for step in range(17) if step not in steps]
    assert longest_run([step - index for index, step in enumerate(silent)]) <= 8  # consecutive silent steps
    sim.close()
