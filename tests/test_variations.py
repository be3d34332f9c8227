"""``lofi-live generate --seed-midi CLIP.mid --bars N --variations K -o DIR``: K continuations of a clip, ready for
a DAW (issue 12, item 4), read back from disk with mido and music21."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from lofi_live.tokens import grid as grid_tokens
from lofi_live.cli import main
from midi_factory import held_chords, write_clip
from model_fixtures import build_grid_token_model, build_model


@pytest.fixture(scope="module", params=["grid", "seed"])
def model(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(request.param)
    return build_grid_token_model(folder, seed=5) if request.param == "grid" else build_model(folder, seed=5)


def variations(model: Path, clip: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--model", str(model), "--seed-midi", str(clip), "-o", str(out), *extra])


def track_ticks(path: Path) -> int:
    """The length of the longest track, in ticks: the clip length a DAW shows."""
    return max(sum(m.time for m in track) for track in mido.MidiFile(path).tracks)


def test_four_variations_of_four_bars_at_the_clips_tempo(model, tmp_path, capsys):
    clip = held_chords(tmp_path / "CLIP.mid", bpm=72.0)
    out = tmp_path / "takes"
    assert variations(model, clip, out, "--bars", "4", "--variations", "4", "--seed", "11") == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["CLIP-1.mid", "CLIP-2.mid", "CLIP-3.mid", "CLIP-4.mid"]
    contents = set()
    for file in files:
        midi = mido.MidiFile(file)
        tempo = next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")
        assert mido.tempo2bpm(tempo) == pytest.approx(72.0, abs=0.01)
        # the 2-bar clip, then exactly 4 bars of 4/4: the variation starts on the bar after the clip
        assert track_ticks(file) == (2 + 4) * 4 * midi.ticks_per_beat
        notes = grid_tokens.file_notes(file)
        assert notes and min(n.start for n in notes) >= 8.0 and max(n.start + n.duration for n in notes) <= 24.0
        contents.add(tuple((n.start, n.duration, n.pitch) for n in notes))
    assert len(contents) == 4  # four different continuations
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and "--seed 11" in lines[-1] and "4 bars each at 72 BPM" in lines[-1]
    assert [line.split(",")[-1].strip() for line in lines[:4]] == ["seed 11", "seed 12", "seed 13", "seed 14"]


def test_each_variation_is_reproducible_from_its_seed(model, tmp_path):
    clip = held_chords(tmp_path / "loop.mid")
    for name, extra in (("a", ["--variations", "3", "--seed", "5"]), ("b", ["--variations", "3", "--seed", "5"]),
                        ("c", ["--variations", "1", "--seed", "6"])):
        assert variations(model, clip, tmp_path / name, "--bars", "2", *extra) == 0
    for number in (1, 2, 3):
        assert (tmp_path / "a" / f"loop-{number}.mid").read_bytes() == (tmp_path / "b" / f"loop-{number}.mid").read_bytes()
    # variation i is generated with seed SEED + i - 1: the second of seed 5 is the first of seed 6
    assert (tmp_path / "a" / "loop-2.mid").read_bytes() == (tmp_path / "c" / "loop-1.mid").read_bytes()
    # and a plain generate with the same seed writes the same notes
    single = tmp_path / "single.mid"
    assert variations(model, clip, single, "--bars", "2", "--seed", "6") == 0
    assert single.read_bytes() == (tmp_path / "c" / "loop-1.mid").read_bytes()


def test_temperature_and_top_k_apply(model, tmp_path):
    clip = held_chords(tmp_path / "loop.mid")
    assert variations(model, clip, tmp_path / "cool", "--bars", "2", "--variations", "2", "--seed", "1",
                      "--temperature", "0.1", "--top-k", "1") == 0
    # top-k 1 is argmax whatever the seed: both variations agree
    first, second = (tmp_path / "cool" / f"loop-{n}.mid" for n in (1, 2))
    assert grid_tokens.file_notes(first) == grid_tokens.file_notes(second)


def test_variations_read_back_with_music21(model, tmp_path):
    music21 = pytest.importorskip("music21")
    clip = held_chords(tmp_path / "loop.mid", bpm=84.0)
    assert variations(model, clip, tmp_path / "v", "--bars", "2", "--variations", "2", "--seed", "3") == 0
    for file in sorted((tmp_path / "v").iterdir()):
        score = music21.converter.parse(str(file))
        marks = score.flatten().getElementsByClass(music21.tempo.MetronomeMark)
        assert marks and marks[0].number == pytest.approx(84.0, abs=0.01)
        notes = score.flatten().notes
        assert len(notes) > 0 and all(8.0 <= float(n.offset) and float(n.offset + n.quarterLength) <= 16.0 for n in notes)


def test_an_explicit_bpm_wins_over_the_clip(model, tmp_path):
    clip = held_chords(tmp_path / "loop.mid", bpm=72.0)
    assert variations(model, clip, tmp_path / "v", "--bars", "1", "--variations", "1", "--bpm", "100", "--seed", "0") == 0
    midi = mido.MidiFile(tmp_path / "v" / "loop-1.mid")
    assert mido.tempo2bpm(next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")) == pytest.approx(100)


@pytest.mark.parametrize("extra, words", [
    (["--variations", "0"], "--variations must be at least 1"),
    (["--variations", "-2"], "--variations must be at least 1"),
    (["--variations", "4", "--bars", "4", "--steps", "64"], "give --bars or --steps, not both"),
    (["--variations", "4", "--bars", "0"], "--bars must be at least 1"),
    (["--variations", "4", "--temperature", "0"], "identical files"),
    (["--variations", "2", "--max-repeat", "-1"], "--max-repeat must be 0 or more"),
])
def test_what_cannot_work_is_refused_in_one_line(model, tmp_path, capsys, extra, words):
    clip = held_chords(tmp_path / "loop.mid")
    assert variations(model, clip, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_clip_with_no_notes_is_refused(model, tmp_path, capsys):
    empty = write_clip(tmp_path / "empty.mid", [], end_beats=4.0)
    assert variations(model, empty, tmp_path / "out", "--variations", "2", "--bars", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.mid" in err[0] and "no notes to continue" in err[0]
    assert not (tmp_path / "out").exists()


def test_variations_need_a_clip_and_a_folder(model, tmp_path, capsys):
    assert main(["generate", "--model", str(model), "--variations", "2", "-o", str(tmp_path / "out")]) == 2
    assert "--variations needs --seed-midi" in capsys.readouterr().err
    clip = held_chords(tmp_path / "loop.mid")
    taken = tmp_path / "taken.mid"
    taken.write_bytes(b"")
    assert variations(model, clip, taken, "--variations", "2") == 2
    assert "is a file" in capsys.readouterr().err
    assert variations(model, clip, tmp_path / "missing.mid", "--variations", "2") == 0  # a new folder is made
    assert (tmp_path / "missing.mid" / "loop-2.mid").is_file()
