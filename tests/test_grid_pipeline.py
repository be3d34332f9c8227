"""A real grid model end to end: ``prepare --tokens grid`` on loops of held chords -> ``fit`` (TensorFlow) ->
``export`` -> ``lofi-live generate`` and ``--variations`` write held notes and rests that read back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from lofi_live.tokens import grid as grid_tokens  # noqa: E402
from lofi_live.tokens import rules as token_rules  # noqa: E402
from lofi_live.cli import main as lofi_live  # noqa: E402
from lofi_live.commands.generate import generate_indices, make_sampler, seed_window  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from midi_factory import held_chords, write_clip  # noqa: E402
from training.cli import main as lofi_train  # noqa: E402
from training.corpus.io import load_corpus  # noqa: E402

pytestmark = pytest.mark.slow

#: Four-chord loops (root-position sevenths around C3-C4), one per file, in different keys.
PROGRESSIONS = (
    ((57, 60, 64, 67), (50, 53, 57, 60), (55, 59, 62, 65), (48, 52, 55, 59)),
    ((52, 55, 59, 62), (57, 60, 64, 67), (50, 53, 57, 60), (55, 59, 62, 65)),
    ((53, 57, 60, 64), (50, 53, 57, 60), (55, 59, 62, 65), (52, 55, 59, 62)),
    ((48, 52, 55, 59), (57, 60, 64, 67), (53, 57, 60, 64), (55, 59, 62, 65)),
)


def loop_notes(chords, passes: int = 4) -> list[tuple[float, float, int]]:
    """Each chord held 3 beats, then a half-beat melody note on its top pitch an octave up, passes times."""
    notes = []
    for repeat in range(passes):
        for index, chord in enumerate(chords):
            bar = (repeat * len(chords) + index) * 4.0
            notes += [(bar, 3.0, pitch) for pitch in chord] + [(bar + 3.5, 0.5, chord[-1] + 12)]
    return notes


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grid-pipeline")
    for number, chords in enumerate(PROGRESSIONS):
        write_clip(root / "midi" / f"loop{number}.mid", loop_notes(chords), end_beats=64.0)
    corpus = root / "corpus.json"
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(corpus), "--tokens", "grid", "--no-cache",
                       "--workers", "1"]) == 0
    assert load_corpus(corpus)["tokens"] == "grid"
    run = root / "run"
    assert lofi_train(["fit", str(corpus), "-o", str(run), "--epochs", "6", "--window", "16", "--val-fraction", "0.25",
                       "--batch-size", "16"]) == 0
    assert json.loads((run / "run.json").read_text())["tokens"] == "grid"
    target = root / "models" / "loops"
    assert lofi_train(["export", str(run), "-o", str(target)]) == 0
    return target.with_suffix(".json")


def test_exported_model_records_the_grid_tokenization(grid_model):
    meta = json.loads(grid_model.read_text())
    assert meta["tokens"] == "grid" and {"hold", "rest"} <= set(meta["vocabulary"])
    assert Model.load(grid_model, provider="cpu").tokens == "grid"


def test_generate_writes_held_notes_that_read_back(grid_model, tmp_path):
    clip = held_chords(tmp_path / "clip.mid")
    out = tmp_path / "out.mid"
    assert lofi_live(["generate", "--model", str(grid_model), "--seed-midi", str(clip), "--steps", "256", "--seed", "0",
                      "--follow", "off", "-o", str(out)]) == 0  # the network's own choices, without the loop rule
    model = Model.load(grid_model, provider="cpu")
    window, _ = seed_window(model, str(clip), np.random.default_rng(0))
    chosen = model.decode(generate_indices(model, window, 256, make_sampler(model, 1.0, 24, 0, 6)))
    while chosen[-1] == token_rules.REST:
        chosen.pop()
    # written from the bar after the 2-bar clip (beat 8)
    assert grid_tokens.notes_to_tokens([replace(n, start=n.start - 8.0) for n in grid_tokens.file_notes(out)]) == chosen
    # the loops hold each chord 3 beats: the model learnt to hold, so its notes are longer than a step
    assert chosen.count(token_rules.HOLD) / len(chosen) >= 0.3
    notes = grid_tokens.file_notes(out)
    assert max(n.duration for n in notes) >= 1.5 and len({n.duration for n in notes}) >= 2


def test_variations_of_a_clip(grid_model, tmp_path):
    clip = held_chords(tmp_path / "clip.mid", bpm=80.0)
    assert lofi_live(["generate", "--model", str(grid_model), "--seed-midi", str(clip), "--bars", "4", "--variations", "3",
                      "--seed", "2", "-o", str(tmp_path / "takes")]) == 0
    takes = sorted((tmp_path / "takes").iterdir())
    assert [t.name for t in takes] == ["clip-1.mid", "clip-2.mid", "clip-3.mid"]
    heard = {tuple(grid_tokens.file_tokens(t)) for t in takes}
    assert len(heard) == 3 and all(token_rules.HOLD in tokens for tokens in heard)
