"""``lofi-live generate``: ONNX Runtime generation, reproducible, key-locked, read back by music21."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

from lofi_live.tokens import rules as token_rules
from lofi_live.cli import main
from lofi_live.commands.generate import generate_indices, longest_run, tokens_to_notes, write_tokens_midi
from lofi_live.tokens.midi import mido_tokens
from lofi_live.model.loader import Model
from lofi_live.model.sampling import Sampler
from model_fixtures import VOCABULARY, build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("gen"), seed=5).with_suffix("")


def _generate(tiny, output: Path, *extra: str) -> tuple[int, str]:
    return main(["generate", "--model", str(tiny), "-o", str(output), *extra])


def test_generate_writes_500_events_half_a_beat_apart(tiny, tmp_path, capsys):
    out = tmp_path / "out.mid"
    assert _generate(tiny, out, "--seed", "1") == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "500 tokens" in summary[0]
    midi = mido.MidiFile(out)
    assert mido.tempo2bpm(next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")) == pytest.approx(90)
    assert any(m.type == "program_change" and m.program == 0 for m in midi.tracks[1])
    onsets, tick = set(), 0
    for message in midi.tracks[1]:
        tick += message.time
        if message.type == "note_on" and message.velocity:
            onsets.add(tick)
    assert sorted(onsets) == [i * midi.ticks_per_beat // 2 for i in range(500)]


def test_music21_reads_back_the_same_tokens(tiny, tmp_path):
    pytest.importorskip("music21")
    from lofi_live.tokens.midi import music21_tokens

    model = Model.load(tiny, provider="cpu")
    indices = generate_indices(model, model.seed_windows[0], 500, Sampler(1.0, 8, 3))
    tokens = model.decode(indices)
    # every single-pitch-class chord and every other token, whatever the sampler picked
    tokens += [t for t in VOCABULARY] + ["7", "10.0.2.4.7", "C#1", "B7"]
    out = write_tokens_midi(tmp_path / "round.mid", tokens, bpm=84)
    assert music21_tokens(out) == tokens
    assert mido_tokens(out) == tokens


def test_same_seed_same_file_and_other_seed_differs(tiny, tmp_path):
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert _generate(tiny, tmp_path / f"{name}.mid", "--seed", seed, "--steps", "200") == 0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    assert (tmp_path / "a.mid").read_bytes() != (tmp_path / "c.mid").read_bytes()


def _seed_loop(model: Model, window: list[int], steps: int) -> list[int]:
    """The seed's generate_notes: the window model on the sliding window, argmax, append."""
    window, out = list(window), []
    for _ in range(steps):
        token = int(np.argmax(model.window_probs(np.array([window[-model.window:]]))[0]))
        out.append(token)
        window.append(token)
    return out


def test_temperature_zero_is_the_seeds_argmax(tiny, tmp_path):
    # without a step graph the runtime runs exactly the seed's loop
    window_only = Model.load(build_model(tmp_path, seed=5, step=False), provider="cpu")
    seed = window_only.seed_windows[1]
    assert generate_indices(window_only, seed, 40, Sampler(0.0, None, None)) == _seed_loop(window_only, seed, 40)
    # with it, the first choice is identical; later ones see up to 2 windows of context (Stepper notes)
    model = Model.load(tiny, provider="cpu")
    assert generate_indices(model, seed, 1, Sampler(0.0, None, None)) == _seed_loop(model, seed, 1)


def test_key_lock_a_minor(tiny, tmp_path):
    out = tmp_path / "a_minor.mid"
    assert _generate(tiny, out, "--key", "A", "--scale", "minor", "--seed", "2", "--temperature", "1.5", "--top-k", "0") == 0
    tokens = mido_tokens(out)
    assert len(tokens) == 500
    a_minor = {9, 11, 0, 2, 4, 5, 7}
    assert all(token_rules.token_pitch_classes(t) <= a_minor for t in tokens)
    pitch_classes = {n.pitch % 12 for n in tokens_to_notes(tokens)}
    assert pitch_classes <= a_minor


def test_key_auto_and_seed_midi(tiny, tmp_path, capsys):
    seed_midi = write_tokens_midi(tmp_path / "seed.mid", ["9.0.4", "A3", "C4", "E4", "2.5.9", "B3", "4.8.11", "9.0.4"], 90)
    out = tmp_path / "auto.mid"
    assert _generate(tiny, out, "--seed-midi", str(seed_midi), "--key", "auto", "--steps", "64", "--seed", "1") == 0
    summary = capsys.readouterr().out
    assert "key A minor" in summary and "seed.mid" in summary


def test_defaults_are_varied(tiny, tmp_path):
    model = Model.load(tiny, provider="cpu")
    for seed in range(3):
        tokens = generate_indices(model, model.seed_windows[seed], 500, Sampler(seed=seed))
        assert longest_run(tokens) <= 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps"),
        (["--seed-midi", "missing.mid"], "no such file"),
        (["--key", "H"], "unknown key"),
        (["--scale", "minor"], "--scale needs --key"),
        (["--key", "C", "--scale", "bebop"], "unknown scale"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny, tmp_path, capsys, args, message):
    assert _generate(tiny, tmp_path / "x.mid", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_seed_tokens_are_one_step_events_voiced_by_token_pitches():
    notes = tokens_to_notes(["C4", "7", "0.4.7"])
    assert [(n.start, n.duration, n.pitch) for n in notes] == [
        (0.0, 0.5, 60), (0.5, 0.5, 55), (0.5, 0.5, 67), (1.0, 0.5, 48), (1.0, 0.5, 52), (1.0, 0.5, 55)]


BLOCK_TF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'training'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import lofi_live
from lofi_live.cli import main
code = main(sys.argv[1:])
assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'training') for m in sys.modules), 'TensorFlow was imported'
sys.exit(code)
"""


def test_generate_works_with_tensorflow_blocked(tiny, tmp_path):
    out = tmp_path / "no_tf.mid"
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_TF, "generate", "--model", str(tiny), "--steps", "100", "-o", str(out)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 0, done.stderr
    assert len(mido_tokens(out)) == 100
