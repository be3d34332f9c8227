"""benchmarks/loop_fit.py: its figures by their definitions, and a run on real loops with the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lofi_live.midi.files import NoteEvent
from midi_factory import write_clip

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "loop_fit.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import loop_fit  # noqa: E402


def test_figures_follow_their_definitions():
    # one bar: C major held 4 beats (steps 0-7), E4 struck at beat 2 over it
    loop = loop_fit.Loop("c", [NoteEvent(0.0, 4.0, p) for p in (60, 64, 67)] + [NoteEvent(2.0, 1.0, 64)], 1)
    assert loop.onsets == {0: {0, 4, 7}, 4: {4}}
    # an answer: C major at step 0 (fits, same as the loop), D4 at step 4 (outside the chord, novel), A4 at step 6
    # (outside, a new onset position) over two cycles, then the loop again
    answer = ["0.4.7", "hold", "hold", "hold", "D4", "hold", "A4", "hold"] + ["0.4.7", "hold", "hold", "hold", "E4", "hold", "hold", "hold"]
    figures = loop.measure(answer)
    # notes: C E G, D4, A4, C E G, E4 -> 7 of 9 fit
    assert figures["notes"] == 9 and figures["chord_fit"] == pytest.approx(7 / 9)
    # the chance of a pitch class drawn from the loop's notes (C E G E): every one sounds everywhere in the bar
    assert figures["chance"] == pytest.approx(1.0)
    # onset positions {0, 4, 6} against {0, 4}; novel onsets: D4 at 4 and A4 at 6 of 5 onsets
    assert figures["onset_alignment"] == pytest.approx(2 / 3) and figures["novelty"] == pytest.approx(2 / 5)
    assert figures["scale_fit"] == pytest.approx(1.0)  # C major: D and A are in the scale


def test_a_run_on_real_loops_with_the_shipped_model(tmp_path):
    chords = [(57, 60, 64, 67), (50, 53, 57, 60), (55, 59, 62, 65), (48, 52, 55, 59)]
    write_clip(tmp_path / "MLP - a.mid", [(i * 2.0 + bar * 8, 1.5, p) for bar in range(2) for i, c in enumerate(chords)
                                          for p in c])
    write_clip(tmp_path / "other.mid", [(0.0, 4.0, 60)])
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--files", "MLP*", "--seeds", "1",
                           "--steps", "32", "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["files"] == 1 and report["loops"] == {"2 bars": 1, "4 bars": 1}  # a 4-bar file: both cuts
    replay = report["results"]["--variation 0"]["all"]
    assert replay["chord_fit"] == 1.0 and replay["onset_alignment"] == 1.0 and replay["novelty"] == 0.0
    free = report["results"]["network alone (--follow off)"]["all"]
    assert free["novelty"] > replay["novelty"]
    assert set(report["results"]["defaults"]) == {"2 bars", "4 bars", "all"}
    text = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--files", "MLP*", "--seeds", "1",
                           "--steps", "16", "--defaults-only"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert text.returncode == 0 and "targets with the defaults: chord_fit" in text.stdout
    missing = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "none")], capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
