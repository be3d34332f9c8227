"""Swing and dynamics (issue 12, item 3) without ports: the swing maths, un-swinging played notes before
they are tokenized, the model following the player's dynamics, humanize's bounds, and
``lofi-live generate --swing 66`` read back with mido to the tick."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import mido
import pytest

from engine_fakes import FakeModel, grid_model
from engine_sim import STEP, Sim, off, on
from lofi_live.tokens import grid as grid_tokens
from lofi_live.cli import main
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.tokens.grid import onset_step
from lofi_live.timing.groove import (
    ACCENT,
    DEFAULT_VELOCITY,
    HUMANIZE_MS,
    HUMANIZE_VELOCITY,
    Dynamics,
    Groove,
    Humanize,
    Swing,
)
from lofi_live.midi.files import NoteEvent, write_midi
from lofi_live.model.sampling import Sampler
from lofi_live.live.timeline import GridSteps
from model_fixtures import build_grid_token_model

LOFI_LIVE = str(Path(sys.executable).parent / "lofi-live")
#: A grid fake that answers every step with an onset (a chord after D4, so accents show on chords too).
ONSETS = {"C4": "D4", "D4": "0.4.7", "0.4.7": "E4", "E4": "C4", "F4": "C4", "G4": "C4", "9.0.4": "C4",
          "hold": "C4", "rest": "C4"}


# ---------------------------------------------------------------------------------------------
# Swing


def test_the_off_beat_lies_pct_percent_through_its_beat_and_66_is_the_triplet():
    assert Swing(50).sounded(2.5) == 2.5
    assert Swing(60).sounded(2.5) == pytest.approx(2.6)
    assert Swing(75).sounded(0.5) == 0.75
    assert Swing(66).sounded(3.5) == pytest.approx(3 + 2 / 3)  # the MPC's 66: the triplet itself
    for pct in (50, 54, 66, 71, 75):
        swing = Swing(pct)
        for beat in (0.0, 1.0, 7.0):  # the beat itself never moves
            assert swing.sounded(beat) == beat
        assert swing.step_beat(9) == swing.sounded(4.5)


def test_between_grid_points_time_stretches_monotonically_and_straight_undoes_it():
    rng = random.Random(4)
    for pct in (50, 58, 66, 75):
        swing = Swing(pct)
        beats = sorted(rng.uniform(0, 16) for _ in range(300))
        sounded = [swing.sounded(b) for b in beats]
        assert sounded == sorted(sounded)
        for beat, played in zip(beats, sounded):
            assert swing.straight(played) == pytest.approx(beat, abs=1e-9)


@pytest.mark.parametrize("pct", [49.9, 75.1, 90, float("nan")])
def test_a_swing_out_of_range_is_refused(pct):
    with pytest.raises(ValueError, match="50..75"):
        Swing(pct)


@pytest.mark.parametrize("command", ["generate", "run"])
def test_swing_90_is_one_line_and_exit_2(command, tmp_path):
    rest = {"generate": ["-o", str(tmp_path / "x.mid")], "run": ["--quiet"]}[command]
    result = subprocess.run([LOFI_LIVE, command, "--swing", "90", *rest], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.strip().count("\n") == 0 and "--swing 90" in result.stderr, result.stderr


def test_under_the_midi_clock_a_swung_off_beat_is_sent_its_swing_after_its_tick_and_steps_keep_their_order():
    sent: list[tuple[int, float]] = []
    engine = Engine(FakeModel(), Sampler(0, None, 0), send=lambda m: None,
                    config=EngineConfig(clock="midi", swing=66, response_bars=64, echo_ms=0, realtime=False))
    engine.prime(["C4"])
    engine.start_worker()
    boundary = engine.boundary
    engine.boundary = lambda step, when: (sent.append((step, when)), boundary(step, when))
    tick = 60 / 120 / 24
    try:
        engine._handle(mido.Message("start"), 0.0)
        for count in range(24 * 3):  # no engine loop: a due step is sent when the next step is announced
            if engine.responder.lookahead.job is not None:
                engine.responder.lookahead.job.done.wait(2)
            engine._handle(mido.Message("clock"), count * tick)
    finally:
        engine.responder.worker.stop()
    # the next step is announced a tick ahead (tick 71 announces step 6, so step 5 is sent first);
    # step 6 waits for its time (no loop here)
    assert [step for step, _ in sent] == list(range(6))
    for step, when in sent:  # on-beats at their tick; off-beats 2/3 through the beat: 4 ticks after theirs
        assert when == pytest.approx(step * 12 * tick + (4 * tick if step % 2 else 0))


# ---------------------------------------------------------------------------------------------
# Un-swinging played notes


def test_a_swung_off_beat_tokenizes_to_its_own_step():
    # the plain nearest-step rule puts a 75 % off-beat, or a 66 % one played a little late (0.1 beat,
    # 50 ms at 120 BPM), on the next step; un-swung each is on its own
    assert onset_step(0.75) == 2 and onset_step(2 / 3 + 0.1) == 2
    steps = GridSteps(Swing(75))
    assert steps.note_on(("player", 0, 60), 0.75) == 1
    assert steps.note_on(("player", 0, 62), 1.0) == 2
    steps = GridSteps(Swing(66))
    assert steps.note_on(("player", 0, 64), 1 + 2 / 3 + 0.1) == 3
    assert steps.note_on(("player", 0, 65), 2 - 0.1) == 4  # an on-beat a little early is its step too


#: A phrase with off-beats and a held note: (straight onset beat, straight release beat, pitch).
PHRASE = [(0.0, 0.4, 60), (0.5, 0.9, 62), (1.0, 1.4, 64), (1.5, 2.4, 65), (2.5, 2.9, 67), (3.0, 3.7, 60)]
#: The player lays back: every note 0.1 beat (50 ms at 120 BPM) late.
LATE = 0.1


def _performance(swing: Swing) -> list[tuple[float, mido.Message]]:
    """:data:`PHRASE` played with ``swing``, :data:`LATE` (times in seconds at 120 BPM)."""
    events = []
    for start, end, pitch in PHRASE:
        events.append(((swing.sounded(start) + LATE) * 0.5, on(pitch)))
        events.append(((swing.sounded(end) + LATE) * 0.5, off(pitch)))
    return events


@pytest.mark.parametrize("pct", [58, 66, 75])
def test_played_swung_into_a_swung_engine_the_tokens_match_a_straight_performance(pct):
    runs = {}
    for swing in (50, pct):
        sim = Sim(model=grid_model(ONSETS), mode="continue", response_bars=1, wait_beats=2, swing=swing)
        sim.run(16, _performance(Swing(swing)))
        runs[swing] = sim.engine.responder.timeline.tokens()
        sim.close()
    assert runs[50][:8] == ["C4", "D4", "E4", "F4", "hold", "G4", "C4", "hold"]
    assert runs[pct] == runs[50]


# ---------------------------------------------------------------------------------------------
# Dynamics


def test_the_level_is_the_median_of_the_last_phrase_and_velocity_overrides():
    dynamics = Dynamics(None, Humanize(False, None))
    assert dynamics.level() == DEFAULT_VELOCITY
    for velocity in (40, 50, 90, 45, 55):
        dynamics.played(velocity, new_phrase=False)
    assert dynamics.level() == 50
    dynamics.played(110, new_phrase=True)  # after a silence: a new phrase
    dynamics.played(100, new_phrase=False)
    assert dynamics.level() == 105
    assert dynamics.velocity(2) == 105 + ACCENT and dynamics.velocity(3) == 105  # the beat is accented
    fixed = Dynamics(70, Humanize(False, None))
    fixed.played(120, new_phrase=True)
    assert fixed.velocity(0) == 70 + ACCENT and fixed.velocity(1) == 70


def test_the_engine_answers_at_the_dynamics_of_the_players_last_phrase():
    sim = Sim(model=grid_model(ONSETS), mode="continue", response_bars=1, wait_beats=2)
    loud = [(i * STEP + 0.001, on(60 + 2 * i, velocity=v)) for i, v in enumerate((100, 110, 120))]
    loud += [(i * STEP + 0.2, off(60 + 2 * i)) for i in range(3)]
    soft = [(20 * STEP + i * STEP + 0.001, on(60 + 2 * i, velocity=v)) for i, v in enumerate((30, 40, 50))]
    soft += [(20 * STEP + i * STEP + 0.2, off(60 + 2 * i)) for i in range(3)]
    sim.run(40, loud + soft)
    model = [(step, m.velocity) for step, m in sim.sent if m.type == "note_on" and m.velocity > 0]
    first = [(s, v) for s, v in model if s < 20]
    second = [(s, v) for s, v in model if s > 24]
    assert first and second
    assert {v - (ACCENT if s % 2 == 0 else 0) for s, v in first} == {110}
    assert {v - (ACCENT if s % 2 == 0 else 0) for s, v in second} == {40}
    sim.close()


# ---------------------------------------------------------------------------------------------
# Humanize


@pytest.mark.parametrize("bpm,pct", [(60, 50), (120, 66), (400, 75), (999, 75)])
def test_humanize_stays_within_a_few_ms_and_never_reaches_another_step(bpm, pct):
    swing = Swing(pct)
    humanize = Humanize(True, 7)
    offsets = [humanize.offset_beats(bpm, swing) for _ in range(2000)]
    ms = [abs(o) * 60.0 / bpm * 1000 for o in offsets]
    assert max(ms) <= HUMANIZE_MS + 1e-9
    assert max(ms) > HUMANIZE_MS / 2  # it does vary
    # a quarter of the gap to the next sounded step at most (at 999 BPM, 75 %: 3.75 ms, under 4 ms)
    assert max(abs(o) for o in offsets) <= swing.step_gap() / 4 + 1e-12
    velocities = [humanize.velocity(80) for _ in range(2000)]
    assert min(velocities) == 80 - HUMANIZE_VELOCITY and max(velocities) == 80 + HUMANIZE_VELOCITY
    assert all(1 <= humanize.velocity(v) <= 127 for v in (1, 127) for _ in range(50))  # kept a MIDI velocity
    again = Humanize(True, 7)
    assert [again.offset_beats(bpm, swing) for _ in range(2000)] == offsets  # seeded
    assert Humanize(False, 7).offset_beats(bpm, swing) == 0.0 and Humanize(False, 7).velocity(80) == 80


def test_humanized_swung_notes_read_back_unswung_to_the_same_tokens():
    tokens = ["C4", "D4", "hold", "0.4.7", "rest", "E4", "hold", "hold", "C4", "C4", "D4"]
    notes = grid_tokens.tokens_to_notes(tokens)
    swing = Swing(66)
    groove = Groove(swing, Dynamics(None, Humanize(True, 3)), Humanize(True, 3))
    played = groove.notes(notes, bpm=90)
    limit = HUMANIZE_MS / 1000 * 90 / 60
    for straight, sounded in zip(sorted(notes), played):
        assert abs(sounded.start - swing.sounded(straight.start)) <= limit + 1e-9
        assert straight.pitch == sounded.pitch
    # a note ends exactly where the notes of the step it ends on begin: a re-struck C4 never overlaps
    starts = {n.start for n in played}
    assert sum(1 for n in played if n.start + n.duration in starts) == len(played) - 4  # before a rest, the last
    back = [NoteEvent(swing.straight(n.start), swing.straight(n.start + n.duration) - swing.straight(n.start), n.pitch)
            for n in played]
    assert grid_tokens.notes_to_tokens(back) == tokens


# ---------------------------------------------------------------------------------------------
# generate --swing 66, read back with mido


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory) -> Path:
    return build_grid_token_model(tmp_path_factory.mktemp("grid"), seed=5)


def _onset_ticks(path: Path) -> tuple[int, list[tuple[int, int]]]:
    midi = mido.MidiFile(path)
    ticks, found = 0, []
    for message in midi.tracks[1]:
        ticks += message.time
        if message.type == "note_on" and message.velocity > 0:
            found.append((ticks, message.velocity))
    return midi.ticks_per_beat, found


def test_generate_swing_66_puts_every_off_beat_two_thirds_through_its_beat(tiny_grid, tmp_path):
    clip = write_midi(tmp_path / "clip.mid", [("clip", [NoteEvent(i * 0.5, 0.4, 60 + i, 50 + 4 * i) for i in range(8)])],
                      bpm=90)  # velocities 50..78: the median of the last phrase is 64
    straight, swung = tmp_path / "straight.mid", tmp_path / "swung.mid"
    common = ["generate", "--model", str(tiny_grid), "--seed-midi", str(clip), "--steps", "128", "--seed", "2"]
    assert main([*common, "-o", str(straight)]) == 0
    assert main([*common, "--swing", "66", "-o", str(swung)]) == 0
    per_beat, plain = _onset_ticks(straight)
    _, played = _onset_ticks(swung)
    assert per_beat == 480 and len(played) == len(plain) >= 20
    positions = {tick % per_beat for tick, _ in played}
    assert positions <= {0, 320}, positions  # 2/3 of 480, to the tick
    assert 320 in positions and 0 in positions
    for (straight_tick, _), (swung_tick, _) in zip(plain, played):
        assert swung_tick == (straight_tick if straight_tick % 480 == 0 else straight_tick - 240 + 320)
    # the clip's dynamics, accented on the beat
    assert {v for t, v in played if t % 480 == 0} == {64 + ACCENT}
    assert {v for t, v in played if t % 480 == 320} == {64}
    # un-swung, the file reads back to the straight one's tokens
    swing = Swing(66)
    back = [NoteEvent(swing.straight(n.start), swing.straight(n.start + n.duration) - swing.straight(n.start), n.pitch)
            for n in grid_tokens.file_notes(swung)]
    assert grid_tokens.notes_to_tokens(back) == grid_tokens.file_tokens(straight)


def test_generate_velocity_and_humanize(tiny_grid, tmp_path):
    out = tmp_path / "h.mid"
    assert main(["generate", "--model", str(tiny_grid), "--steps", "64", "--seed", "4", "--velocity", "70",
                 "--humanize", "--swing", "58", "-o", str(out)]) == 0
    per_beat, played = _onset_ticks(out)
    limit_ticks = HUMANIZE_MS / 1000 * 90 / 60 * per_beat  # 90 BPM
    for tick, velocity in played:
        position = tick % per_beat
        nearest = min((0, 0.58 * per_beat, per_beat), key=lambda p: abs(position - p))
        assert abs(position - nearest) <= limit_ticks + 0.5
        accent = ACCENT if nearest != 0.58 * per_beat else 0
        assert abs(velocity - (70 + accent)) <= HUMANIZE_VELOCITY
    again = tmp_path / "h2.mid"
    assert main(["generate", "--model", str(tiny_grid), "--steps", "64", "--seed", "4", "--velocity", "70",
                 "--humanize", "--swing", "58", "-o", str(again)]) == 0
    assert _onset_ticks(again) == _onset_ticks(out)  # seeded


def test_groove_places_a_note_on_its_step_by_the_one_beat_to_step_rule():
    """A note a quarter step off the grid belongs to the step onset_step names (ties late), in the groove as
    in the tokens: not the one banker's rounding would pick."""
    swing = Swing(66)
    groove = Groove(swing, Dynamics(80, Humanize(False, 0)), Humanize(False, 0))
    for start in (0.25, 0.75, 1.25):  # exactly between two steps
        [note] = groove.notes([NoteEvent(start, 0.5, 60)], 90)
        assert note.start == pytest.approx(swing.step_beat(onset_step(start)))
