"""``lofi-live generate`` with a grid model: durations written, read back to the same tokens, seed clips read
under the grid rules, and a repetition guard that never cuts holds or rests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mido
import numpy as np
import pytest

from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens import rules as token_rules
from lofi_live.cli import main
from lofi_live.commands.generate import (
    GridGrammar,
    clip_tokens,
    generate_indices,
    longest_onset_run,
    make_sampler,
    seed_window,
)
from lofi_live.model.loader import Model
from lofi_live.model.sampling import Sampler, rhythm_mask
from midi_factory import held_chords, write_clip
from model_fixtures import GRID_VOCABULARY, build_grid_token_model, build_model


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory) -> Path:
    # seed 5: a random network that holds and rests now and then (about 7 % holds)
    return build_grid_token_model(tmp_path_factory.mktemp("grid"), seed=5)


def expected_tokens(model: Model, seed_midi: Path, steps: int, seed: int, temperature=1.0, top_k=24, max_repeat=6):
    """What ``generate --seed-midi ... --follow off`` chooses, step by step, through the same functions."""
    window, _ = seed_window(model, str(seed_midi), np.random.default_rng(seed))
    sampler = make_sampler(model, temperature, top_k, seed, max_repeat)
    return model.decode(generate_indices(model, window, steps, sampler))


def continuation_tokens(path: Path, start_beats: float) -> list[str]:
    """The grid tokens of a generated file's notes, read from the bar where the continuation starts."""
    notes = [replace(n, start=n.start - start_beats) for n in grid_tokens.file_notes(path)]
    assert min(n.start for n in notes) >= 0
    return grid_tokens.notes_to_tokens(notes)


#: The network alone, as before the loop rule: no replay, no chord restriction.
FREE = ["--follow", "off"]


def _strip_rests(tokens: list[str]) -> list[str]:
    while tokens and tokens[-1] == token_rules.REST:
        tokens = tokens[:-1]
    return tokens


def test_grid_model_file_reads_back_to_the_same_grid_tokens(grid_model, tmp_path, capsys):
    clip = held_chords(tmp_path / "loop.mid")
    out = tmp_path / "out.mid"
    assert main(["generate", "--model", str(grid_model), "--seed-midi", str(clip), "--steps", "400", "--seed", "3",
                 *FREE, "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "400 grid tokens" in summary and "grid tokens of loop.mid" in summary
    generated = expected_tokens(Model.load(grid_model, provider="cpu"), clip, 400, 3)
    holds = generated.count(token_rules.HOLD)
    assert holds >= 5 and generated.count(token_rules.REST) >= 1
    # the clip is 2 bars: the continuation starts on bar 3 (beat 8)
    assert continuation_tokens(out, 8.0) == _strip_rests(generated)
    assert min(n.start for n in grid_tokens.file_notes(out)) == 8.0
    # durations: held onsets are one long note each, struck once
    midi = mido.MidiFile(out)
    assert midi.tracks[1].name == "model"
    note_ons = sum(1 for m in midi.tracks[1] if m.type == "note_on" and m.velocity)
    voiced = sum(len(token_rules.token_pitches(t)) for t in generated)
    assert note_ons == voiced
    lengths = {n.duration for n in grid_tokens.file_notes(out)}
    assert max(lengths) >= 1.0 and len(lengths) >= 2


def test_grid_file_durations_read_back_with_music21(grid_model, tmp_path):
    music21 = pytest.importorskip("music21")
    clip = held_chords(tmp_path / "loop.mid")
    out = tmp_path / "out.mid"
    assert main(["generate", "--model", str(grid_model), "--seed-midi", str(clip), "--steps", "120", "--seed", "4",
                 *FREE, "-o", str(out)]) == 0
    generated = expected_tokens(Model.load(grid_model, provider="cpu"), clip, 120, 4)
    want = sorted((n.start, n.duration, n.pitch) for n in grid_tokens.tokens_to_notes(generated, start_step=16))
    # music21 splits a note that crosses a bar line into tied pieces: join them back
    score = music21.converter.parse(str(out)).stripTies()
    found = sorted((float(n.offset), float(n.quarterLength), p.midi) for n in score.flatten().notes for p in n.pitches)
    assert found == want


def test_seed_model_still_writes_one_event_per_step(tmp_path):
    seed_model = build_model(tmp_path, seed=5)
    clip = held_chords(tmp_path / "loop.mid")
    out = tmp_path / "seed.mid"
    assert main(["generate", "--model", str(seed_model), "--seed-midi", str(clip), "--steps", "64", "--seed", "1",
                 "-o", str(out)]) == 0
    notes = grid_tokens.file_notes(out)
    assert {n.duration for n in notes} == {0.5}
    # from the bar line after the 2-bar clip
    assert sorted({n.start for n in notes}) == [8.0 + i * 0.5 for i in range(64)]


def test_seed_clip_is_read_with_the_models_tokenization(grid_model, tmp_path):
    clip = held_chords(tmp_path / "loop.mid")
    am9, dm9 = token_rules.chord_token([57, 60, 64, 67, 71]), token_rules.chord_token([50, 53, 57, 60, 64])
    # each chord 3 beats (an onset and 5 holds), then a half-beat melody note; the rest after D5 is the
    # silence before the clip's bar line, kept so that the continuation starts on the next bar
    grid = clip_tokens(clip, "grid").tokens
    assert grid == [am9] + ["hold"] * 5 + ["rest", "E5", dm9] + ["hold"] * 5 + ["D5", "rest"]
    model = Model.load(grid_model, provider="cpu")
    window, origin = seed_window(model, str(clip), np.random.default_rng(0))
    assert window == model.encode(grid) and "16 grid tokens of loop.mid" in origin
    # unknown chords and notes map to the nearest known ones; holds and rests stay in place
    assert [token_rules.rhythm_class(t) for t in model.decode(window)] == [token_rules.rhythm_class(t) for t in grid]
    assert clip_tokens(clip, "seed").tokens == [am9, "E5", dm9, "D5"]


@pytest.mark.parametrize("notes, end_beats, rests", [
    ([(0.0, 2.0, 60)], 4.0, 4),  # held 2 beats of a one-bar clip: 4 silent steps to the bar line
    ([(0.0, 2.0, 60)], 2.0, 4),  # the track ends with the note: the clip still ends on the bar line
    ([(0.0, 8.0, 60)], 8.0, 0),  # sounds to the end of bar 2
    ([(0.0, 1.0, 60)], 16.0, 8),  # 3 silent bars: at most 8 rests, as in the corpus
    ([(0.0, 0.5, 60), (3.5, 0.5, 62)], 4.0, 0),  # ends on the last step of the bar
])
def test_clip_ends_on_its_bar_line(tmp_path, notes, end_beats, rests):
    clip = write_clip(tmp_path / "c.mid", notes, end_beats=end_beats)
    tokens = grid_tokens.file_tokens(clip)
    timed = clip_tokens(clip, "grid")
    assert timed.tokens == tokens + ["rest"] * rests
    # the clip's end, rounded up to the bar: the last token lies just before it, on the bar's last step
    bars = -(-max(end_beats, max(s + d for s, d, _ in notes)) // 4)
    assert timed.end_step == bars * 8 and timed.steps[-1] == timed.end_step - 1 and timed.positions[-1] == 7


def test_a_clip_without_notes_is_refused(grid_model, tmp_path, capsys):
    drums = write_clip(tmp_path / "drums.mid", [(0.0, 0.25, 36), (1.0, 0.25, 38)], channel=9)
    assert main(["generate", "--model", str(grid_model), "--seed-midi", str(drums), "-o", str(tmp_path / "x.mid")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no notes to continue" in err[0] and "drums" in err[0]
    assert not (tmp_path / "x.mid").exists()


def test_grammar_keeps_the_file_readable():
    grammar = GridGrammar(GRID_VOCABULARY)
    hold, rest = GRID_VOCABULARY.index("hold"), GRID_VOCABULARY.index("rest")
    assert not grammar.allowed()[hold] and grammar.allowed()[rest]  # nothing sounds yet
    grammar.add("C4")
    assert grammar.allowed()[hold]
    grammar.add("hold")
    assert grammar.allowed()[hold]
    for count in range(8):
        grammar.add("rest")
        assert not grammar.allowed()[hold]
        assert grammar.allowed()[rest] == (count < 7)
    grammar.add("0.4.7")
    assert grammar.allowed()[hold] and grammar.allowed()[rest]
    key = np.array([t in ("C4", "hold", "rest") for t in GRID_VOCABULARY])
    grammar.add("rest")
    assert np.flatnonzero(grammar.allowed(key)).tolist() == [GRID_VOCABULARY.index("C4"), rest]


def test_argmax_grid_generation_stays_in_the_grammar(grid_model):
    model = Model.load(grid_model, provider="cpu")
    for window in model.seed_windows[:4]:
        for temperature in (0.0, 1.5):
            tokens = model.decode(generate_indices(model, window, 300, make_sampler(model, temperature, None, 1, 6)))
            previous = token_rules.REST  # a continuation's file starts silent
            rests = 0
            for token in tokens:
                assert not (token == token_rules.HOLD and previous == token_rules.REST)
                rests = rests + 1 if token == token_rules.REST else 0
                assert rests <= grid_tokens.MAX_RESTS
                previous = token if token != token_rules.HOLD else previous


def test_repetition_guard_counts_onsets_only():
    vocabulary = ["C4", "E4", "hold", "rest"]
    exempt = rhythm_mask(vocabulary)
    assert exempt.tolist() == [False, False, True, True] and rhythm_mask(["C4", "0.4.7"]) is None
    held = np.array([0.005, 0.005, 0.985, 0.005])
    # a chord held for 2 bars (15 holds) and 2 silent bars: never cut
    guarded = Sampler(1.0, None, 1, max_repeat=3, exempt=exempt)
    choices = [guarded.choose(held) for _ in range(400)]
    runs = [len(run) for run in "".join("h" if c == 2 else "." for c in choices).split(".")]
    assert max(runs) > 15
    # without the exemption the same guard breaks every hold after 3
    plain = Sampler(1.0, None, 1, max_repeat=3)
    choices = [plain.choose(held) for _ in range(400)]
    assert max(len(r) for r in "".join("h" if c == 2 else "." for c in choices).split(".")) <= 3
    # C4 struck again and again with holds between is still a run of C4: the guard stops it after 3
    strike, sustain = np.array([0.97, 0.01, 0.01, 0.01]), np.array([0.01, 0.01, 0.97, 0.01])
    guarded = Sampler(1.0, None, 2, max_repeat=3, exempt=exempt)
    tokens = [vocabulary[guarded.choose(strike if i % 2 == 0 else sustain)] for i in range(200)]
    assert longest_onset_run(tokens) <= 3 and tokens.count("hold") > 80


def test_make_sampler_exempts_holds_and_rests_of_grid_models_only(grid_model, tmp_path):
    grid = make_sampler(Model.load(grid_model, provider="cpu"), 1.0, 24, 0, 6)
    assert np.flatnonzero(grid.exempt).tolist() == [GRID_VOCABULARY.index("hold"), GRID_VOCABULARY.index("rest")]
    seed = make_sampler(Model.load(build_model(tmp_path), provider="cpu"), 1.0, 24, 0, 6)
    assert seed.exempt is None


def test_key_lock_leaves_holds_and_rests_free(grid_model, tmp_path):
    clip = held_chords(tmp_path / "loop.mid")
    out = tmp_path / "a_minor.mid"
    assert main(["generate", "--model", str(grid_model), "--seed-midi", str(clip), "--key", "A", "--scale", "minor",
                 "--steps", "300", "--seed", "2", *FREE, "-o", str(out)]) == 0
    tokens = grid_tokens.file_tokens(out)
    onsets = [t for t in tokens if not token_rules.is_rhythm(t)]
    assert onsets and all(token_rules.token_pitch_classes(t) <= {9, 11, 0, 2, 4, 5, 7} for t in onsets)
    assert "hold" in tokens


def test_bench_measures_a_grid_model(grid_model, capsys):
    assert main(["bench", "--model", str(grid_model), "--seed-model", str(grid_model), "--steps", "100", "--no-live",
                 "--no-keras", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == "grid" and 0 < result["generate_500_s"] < 10


def test_sampling_sanity_prints_the_grid_figures(grid_model, tmp_path):
    """benchmarks/sampling_sanity.py on any exported model: issue 10's figures for a grid model, per seed."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "sampling_sanity.py"
    done = subprocess.run([sys.executable, str(script), "--model", str(grid_model), "--seeds", "3", "--steps", "120",
                           "--setting", "1.0:24", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tokens"] == "grid" and len(report["results"]) == 1
    result = report["results"][0]
    assert [row["seed"] for row in result["rows"]] == [0, 1, 2]
    model = Model.load(grid_model, provider="cpu")
    onsets = 0
    for seed, row in enumerate(result["rows"]):
        # seed i of n: seed window i * len / n (spread over the windows) and random seed i
        window = model.seed_windows[seed * len(model.seed_windows) // 3]
        tokens = model.decode(generate_indices(model, window, 120, make_sampler(model, 1.0, 24, seed, 6)))
        assert row["hold_share"] == round(tokens.count("hold") / 120, 3)
        assert row["longest_onset_run"] == longest_onset_run(tokens)
        assert row["distinct_onsets"] == len({t for t in tokens if not token_rules.is_rhythm(t)})
        onsets += sum(1 for t in tokens if not token_rules.is_rhythm(t))
    assert sum(result["length_histogram"].values()) == onsets  # one length per onset
    text = subprocess.run([sys.executable, str(script), "--model", str(grid_model), "--seeds", "2", "--steps", "60"],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 0 and "per seed at T 1" in text.stdout and "note lengths" in text.stdout
    seed_model = build_model(tmp_path, seed=5)
    text = subprocess.run([sys.executable, str(script), "--model", str(seed_model), "--seeds", "2", "--steps", "60",
                           "--setting", "1.0:24"], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0 and "seed tokens" in text.stdout and "issue-4 check" in text.stdout
