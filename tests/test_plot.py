"""``lofi-live plot``: a PNG piano roll with both parts in their colours, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lofi_live.cli import main
from lofi_live.errors import LofiError
from lofi_live.midi.files import NoteEvent, write_midi
from lofi_live.commands.plot import PART_COLOURS, group_parts, plot_session
from lofi_live.recording.session import Session

pytest.importorskip("matplotlib")


def _colour_pixels(png: Path, hex_colour: str, tolerance: float = 0.06) -> int:
    import matplotlib.image as mpimg

    image = mpimg.imread(png)[..., :3]
    # notes are drawn at alpha 0.9 over white: compare against the blended colour
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    blended = 0.9 * rgb + 0.1
    return int((np.abs(image - blended).max(axis=-1) < tolerance).sum())


def _session(tmp_path: Path) -> Path:
    session = Session(84.0, tmp_path / "jam.mid")
    for step in range(16):
        session.note_on(step * 0.5, "player", 60 + step % 5, 90)
        session.note_off(step * 0.5 + 0.45, "player", 60 + step % 5)
    for step in range(16, 32):
        for pitch in (48, 52, 55):
            session.note_on(step * 0.5, "model", pitch + step % 3, 80)
            session.note_off(step * 0.5 + 0.45, "model", pitch + step % 3)
    return session.close(end_beat=16.0)


def test_plot_writes_a_png_with_both_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image as mpimg

    out = tmp_path / "roll.png"
    assert main(["plot", str(_session(tmp_path)), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = mpimg.imread(out).shape[:2]
    assert width >= 800 and height >= 400
    assert _colour_pixels(out, PART_COLOURS["player"]) > 2000
    assert _colour_pixels(out, PART_COLOURS["model"]) > 2000


def test_one_part_only_shows_one_colour(tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "solo.mid", [("player", [NoteEvent(i * 0.5, 0.5, 60 + i) for i in range(8)]), ("model", [])], 120)
    out = plot_session(midi, tmp_path / "solo.png")
    assert _colour_pixels(out, PART_COLOURS["player"]) > 500
    assert _colour_pixels(out, PART_COLOURS["model"]) == 0


def test_unnamed_tracks_fall_back_to_track_order(tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "other.mid", [("Piano", [NoteEvent(0, 1, 60)]), ("Bass", [NoteEvent(1, 1, 40)]),
                                               ("Drums", [NoteEvent(2, 1, 36)])], 100)
    from lofi_live.midi.files import midi_notes, read_midi

    labels = list(group_parts(midi_notes(read_midi(midi))))
    assert labels == ["player (Piano)", "model (Bass)", "Drums"]
    out = plot_session(midi, tmp_path / "other.png")
    assert _colour_pixels(out, PART_COLOURS["player"]) > 100
    assert _colour_pixels(out, PART_COLOURS["model"]) > 100


@pytest.mark.parametrize(
    "content, reason",
    [(None, "no such file"), (b"", "empty file"), (b"hello", "not a MIDI file"), (b"MThd\x00\x00", "corrupt or truncated")],
)
def test_bad_mid_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.mid"
    if content is not None:
        path.write_bytes(content)
    assert main(["plot", str(path), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("\n") == 1 and str(path) in err
    assert not (tmp_path / "x.png").exists()


def test_no_notes_is_a_clear_error(tmp_path: Path) -> None:
    empty = write_midi(tmp_path / "empty.mid", [("player", []), ("model", [])], 120)
    with pytest.raises(LofiError, match="no notes to plot"):
        plot_session(empty, tmp_path / "e.png")


def test_missing_matplotlib_says_how_to_install(tmp_path: Path) -> None:
    """A real interpreter where ``import matplotlib`` fails (a stub package first on the path)."""
    stub = tmp_path / "stub" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    midi = write_midi(tmp_path / "s.mid", [("player", [NoteEvent(0, 1, 60)])], 120)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "stub"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "lofi_live.cli", "plot", str(midi), "-o", str(tmp_path / "s.png")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "pip install lofi-live[plot]" in result.stderr and result.stderr.count("\n") == 1
