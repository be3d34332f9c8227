"""``lofi-live generate`` continuing a clip with the shipped model: read to the clip's end, written from the bar
after it, the clip as its own track, the loop followed; and ``plot`` telling whose notes are whose."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from lofi_live.cli import main
from lofi_live.commands.plot import group_parts
from lofi_live.midi.files import midi_notes, read_midi
from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens import loops
from lofi_live.tokens import rules as token_rules
from midi_factory import write_clip

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "seed_held_chords.mid"


def _tracks(path: Path) -> dict[str, list]:
    found: dict[str, list] = {}
    for name, note in midi_notes(read_midi(path)):
        found.setdefault(name, []).append(note)
    return found


def test_the_example_continues_on_the_bar_after_the_clip(tmp_path, capsys):
    out = tmp_path / "out.mid"
    assert main(["generate", "--seed-midi", str(EXAMPLE), "--bars", "8", "--seed", "0", "-o", str(out)]) == 0
    assert "from beat 8 (the bar after the clip)" in capsys.readouterr().out
    # the clip's last note ends at 7.5 beats: the clip is 2 bars, the answer starts on bar 3 and lasts 8 bars
    assert max(n.start + n.duration for n in grid_tokens.file_notes(EXAMPLE)) == 7.5
    notes = _tracks(out)["model"]
    assert min(n.start for n in notes) == 8.0 and max(n.start + n.duration for n in notes) <= 8.0 + 32
    assert mido.MidiFile(out).length == pytest.approx((8 + 32) * 60 / 80)  # the file ends after bar 10 (80 BPM)


def test_trailing_silence_inside_the_clip_counts(tmp_path):
    # one bar of notes, then the clip runs on to the middle of bar 3: it is 3 bars long
    clip = write_clip(tmp_path / "clip.mid", [(0.0, 2.0, p) for p in (57, 60, 64)], end_beats=9.0)
    assert loops.clip_end_step(clip) == 24
    out = tmp_path / "out.mid"
    assert main(["generate", "--seed-midi", str(clip), "--steps", "16", "--seed", "1", "-o", str(out)]) == 0
    assert min(n.start for n in grid_tokens.file_notes(out)) >= 12.0


def test_with_seed_writes_the_clip_before_the_continuation_and_plot_tells_them_apart(tmp_path, capsys):
    out = tmp_path / "with.mid"
    assert main(["generate", "--seed-midi", str(EXAMPLE), "--bars", "4", "--seed", "2", "--with-seed", "-o", str(out)]) == 0
    tracks = _tracks(out)
    assert list(tracks) == ["player (seed)", "model"]
    clip = grid_tokens.file_notes(EXAMPLE)
    assert sorted((n.start, n.duration, n.pitch) for n in tracks["player (seed)"]) == sorted(
        (n.start, n.duration, n.pitch) for n in clip)
    assert min(n.start for n in tracks["model"]) >= 8.0
    parts = group_parts(midi_notes(read_midi(out)))
    assert list(parts) == ["player (seed)", "model"]
    pytest.importorskip("matplotlib")
    assert main(["plot", str(out), "-o", str(tmp_path / "roll.png")]) == 0
    assert (tmp_path / "roll.png").stat().st_size > 1000


def test_plot_labels_a_continuation_as_the_models(tmp_path):
    out = tmp_path / "alone.mid"
    assert main(["generate", "--seed-midi", str(EXAMPLE), "--bars", "2", "--seed", "3", "-o", str(out)]) == 0
    assert list(group_parts(midi_notes(read_midi(out)))) == ["model"]
    # files written before the track was named "model" are the model's too
    old = ROOT / "examples" / "continuation-grid.mid"
    if {name for name, _ in midi_notes(read_midi(old))} == {"lofi-live"}:
        assert list(group_parts(midi_notes(read_midi(old)))) == ["model"]


def _loop_tokens(path: Path, start_beats: float) -> list[str]:
    from dataclasses import replace

    return grid_tokens.notes_to_tokens([replace(n, start=n.start - start_beats) for n in grid_tokens.file_notes(path)])


def test_variation_zero_replays_the_loop_and_one_varies_it(tmp_path):
    loop = tmp_path / "loop.mid"
    # two bars, four held chords (Am7, Dm7, G7, Cmaj7), played twice
    chords = [(57, 60, 64, 67), (50, 53, 57, 60), (55, 59, 62, 65), (48, 52, 55, 59)]
    notes = [(bar * 8 + i * 2.0, 1.5, p) for bar in (0, 1) for i, chord in enumerate(chords) for p in chord]
    write_clip(loop, notes, end_beats=16.0)
    heard = grid_tokens.file_tokens(loop)
    out = tmp_path / "replay.mid"
    assert main(["generate", "--seed-midi", str(loop), "--bars", "4", "--seed", "4", "--variation", "0", "-o", str(out)]) == 0
    assert _loop_tokens(out, 16.0) == heard[:16] + heard[:15]  # the last release's rest is dropped by the grid rule
    varied = tmp_path / "varied.mid"
    assert main(["generate", "--seed-midi", str(loop), "--bars", "4", "--seed", "4", "--variation", "1", "-o",
                 str(varied)]) == 0
    tokens = _loop_tokens(varied, 16.0)
    assert tokens != _loop_tokens(out, 16.0)
    # every onset of the varied answer keeps to the chord sounding in the loop at that point
    sounding = loops.cycle_pitch_classes(grid_tokens.file_notes(loop), 16)
    for step, token in enumerate(tokens):
        if not token_rules.is_rhythm(token):
            where = step % 16
            allowed = sounding[where] or sounding[(where - 1) % 16] | sounding[(where + 1) % 16]
            assert token_rules.token_pitch_classes(token) <= allowed, (step, token)


def test_bad_follow_options_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "x.mid"
    assert main(["generate", "--with-seed", "--steps", "8", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--with-seed needs --seed-midi" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--seed-midi", str(EXAMPLE), "--variation", "2", "-o", str(out)])
    assert exit_info.value.code == 2 and "variation" in capsys.readouterr().err
