"""The lstm-pointer preset end to end on tiny real data: prepare (grid, positions) -> fit --vary-loops ->
export (window and step graphs, parity-checked) -> the runtime's window_probs, PointerStepper and --variation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from midi_factory import write_clip  # noqa: E402
from lofi_live.errors import LofiError  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.model.pointer import PointerStepper, mix  # noqa: E402
from training.cli import main as lofi_train  # noqa: E402

WINDOW = 24
CHORDS = ([57, 60, 64, 67], [50, 53, 57, 60], [55, 59, 62, 65], [52, 55, 59, 62], [53, 57, 60, 64])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pointer")
    rng = np.random.default_rng(0)
    for i in range(8):  # two-bar loops of held chords with a melody note: 16 steps each
        first, second = (CHORDS[k] for k in rng.choice(len(CHORDS), 2, replace=False))
        notes = [(0.0, 3.0, p) for p in first] + [(3.0, 1.0, 72 + i % 3)] + [(4.0, 4.0, p) for p in second]
        write_clip(root / "midi" / f"loop{i}.mid", notes)
    corpus = root / "loops.json"
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(corpus), "--no-cache", "--workers", "1"]) == 0
    run = root / "run"
    assert lofi_train(["fit", str(corpus), "-o", str(run), "--preset", "lstm-pointer", "--window", str(WINDOW),
                       "--vary-loops", "3", "--vary-rounds", "2", "--val-files", "loop7.mid", "--epochs", "1",
                       "--batch-size", "8"]) == 0
    assert lofi_train(["export", str(run), "-o", str(root / "out" / "pointer"), "--test-files", "loop6.mid"]) == 0
    return root / "out" / "pointer.json"


def test_the_run_records_the_splits_and_the_export_describes_positions_and_the_gate(exported: Path) -> None:
    run = json.loads((exported.parent.parent / "run" / "run.json").read_text())
    assert run["data"]["validation_files"] == ["loop7.mid"] and run["data"]["vary_loops"] == 3
    meta = json.loads(exported.read_text())
    assert meta["preset"] == "lstm-pointer" and meta["position"] is True
    assert meta["pointer"] == {"units": 192, "key_dim": 64}
    assert meta["data"]["validation_files"] == ["loop7.mid"] and meta["data"]["test_files"] == ["loop6.mid"]
    assert meta["metrics"]["parity_max_abs_diff"] <= 1e-4 and meta["metrics"]["step_parity_max_abs_diff"] <= 1e-4
    model = Model.load(exported, provider="cpu")
    assert model.uses_position and model.has_copy_gate and isinstance(model.stepper(), PointerStepper)


def _contexts(model: Model, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, len(model.vocabulary), (count, length))
    positions = (np.arange(length)[None, :] + rng.integers(0, 8, (count, 1))) % 8
    return tokens, positions


def test_the_stepper_gives_the_window_graphs_answer(exported: Path) -> None:
    model = Model.load(exported, provider="cpu")
    tokens, positions = _contexts(model, 3, WINDOW)
    expected = model.window_probs(tokens, positions, cache=False)
    stepper = model.stepper()
    for row in range(3):
        np.testing.assert_allclose(stepper.reset(tokens[row], positions[row]), expected[row], atol=1e-5)
        stepper.reset(tokens[row, :2], positions[row, :2])  # a short context read as it is, then carried on
        for t in range(2, WINDOW):
            probs = stepper.advance(int(tokens[row, t]), int(positions[row, t]))
            short = model.window_probs(tokens[row:row + 1, :t + 1], positions[row:row + 1, :t + 1], cache=False)
            np.testing.assert_allclose(probs, short[0], atol=1e-5)
    # a long run: every `window` advances the shadow takes over with the window graph's answer on the last window
    stream, steps = _contexts(model, 1, 3 * WINDOW + 5)
    stepper.reset(stream[0, :1], steps[0, :1])
    synced = 0
    for t in range(1, stream.shape[1]):
        probs = stepper.advance(int(stream[0, t]))  # positions continue the bar on their own
        if t % WINDOW == 0:
            span = slice(t - WINDOW + 1, t + 1)
            reference = model.window_probs(stream[:, span], steps[:, span], cache=False)[0]
            np.testing.assert_allclose(probs, reference, atol=1e-5)
            synced += 1
    assert synced == 3


def test_positions_change_the_answer_and_default_to_a_downbeat(exported: Path) -> None:
    model = Model.load(exported, provider="cpu")
    tokens, _ = _contexts(model, 2, 12)
    downbeat = model.window_probs(tokens, np.tile(np.arange(12) % 8, (2, 1)), cache=False)
    np.testing.assert_allclose(model.window_probs(tokens, cache=False), downbeat, atol=1e-7)
    offbeat = model.window_probs(tokens, np.tile((np.arange(12) + 3) % 8, (2, 1)), cache=False)
    assert np.abs(offbeat - downbeat).max() > 1e-6
    with pytest.raises(ValueError, match="positions"):
        model.window_probs(tokens, np.zeros((2, 11), int))


def test_variation_moves_from_copying_to_playing_freely(exported: Path) -> None:
    model = Model.load(exported, provider="cpu")
    tokens, positions = _contexts(model, 4, WINDOW)
    feeds = {"tokens": tokens.astype(np.int32), "positions": positions.astype(np.int32)}
    probs, vocab, copy, gate = model._window_session.run(["probs", "vocab_probs", "copy_probs", "gate"], feeds)
    np.testing.assert_allclose(model.window_probs(tokens, positions, cache=False), probs, atol=1e-6)
    np.testing.assert_allclose(model.window_probs(tokens, positions, cache=False, variation=0.5), probs, atol=1e-6)
    np.testing.assert_allclose(model.window_probs(tokens, positions, cache=False, variation=1.0), vocab, atol=1e-6)
    copied = copy / (1.0 - gate[:, None])
    np.testing.assert_allclose(model.window_probs(tokens, positions, cache=False, variation=0.0), copied, atol=1e-5)
    # the mass on tokens that never followed anything in the window grows steadily with the variation
    outside = copy < 1e-9
    masses = [float((model.window_probs(tokens, positions, cache=False, variation=v) * outside).sum())
              for v in np.linspace(0, 1, 11)]
    assert masses[0] < 1e-5 and all(b > a for a, b in zip(masses, masses[1:]))
    stepper = model.stepper()
    stepper.reset(tokens[0], positions[0])
    stepper.variation = 0.0
    assert stepper.advance(int(tokens[0, 0])).sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        stepper.variation = 1.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        model.window_probs(tokens, positions, variation=-0.1)


def test_mix_with_nothing_to_copy_is_the_vocabulary() -> None:
    vocab = np.array([[0.2, 0.3, 0.5]])
    for variation in (None, 0.0, 0.3, 1.0):
        np.testing.assert_allclose(mix(vocab, np.zeros((1, 3)), np.array([1.0]), variation), vocab, atol=1e-7)


def test_a_pointer_section_without_positions_is_refused(exported: Path, tmp_path: Path) -> None:
    meta = json.loads(exported.read_text())
    meta["position"] = False
    for suffix in (".onnx", ".step.onnx"):
        (tmp_path / f"pointer{suffix}").write_bytes(exported.with_name(f"pointer{suffix}").read_bytes())
    (tmp_path / "pointer.json").write_text(json.dumps(meta))
    with pytest.raises(LofiError, match="'position' must be true"):
        Model.load(tmp_path / "pointer.json", provider="cpu")
    meta["position"], meta["pointer"] = True, {"units": "many"}
    (tmp_path / "pointer.json").write_text(json.dumps(meta))
    result = subprocess.run([sys.executable, "-m", "lofi_live.cli", "generate", "--model", str(tmp_path / "pointer"),
                             "-o", str(tmp_path / "x.mid")], capture_output=True, text=True)
    assert result.returncode == 2 and "pointer must be an object" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_live_engine_feeds_bar_positions_and_the_variation_control_to_the_pointer_stepper(exported: Path) -> None:
    """The live engine with the exported pointer model (real ONNX, real PointerStepper): every token it reads
    comes with its step's bar position counted from the player's first onset, and the variation control
    reaches the stepper's copy gate."""
    from engine_sim import STEP, Sim, off, on
    from lofi_live.live.controls import Action
    from lofi_live.model.sampling import Sampler

    model = Model.load(exported, provider="cpu")
    assert model.uses_position and model.has_copy_gate
    fed: list[tuple[int, int | None]] = []
    make = model.stepper

    def recording_stepper():
        stepper = make()
        reset, advance = stepper.reset, stepper.advance

        def on_reset(window, positions=None):
            fed.clear()
            fed.extend(zip(window, positions if positions is not None else [None] * len(window)))
            return reset(window, positions)

        def on_advance(token, position=None):
            fed.append((token, position))
            return advance(token, position)

        stepper.reset, stepper.advance = on_reset, on_advance
        return stepper

    model.stepper = recording_stepper
    sim = Sim(model=model, sampler=Sampler(0, None, 0), wait_beats=2, response_bars=1, variation=0.3)
    start = 3 * STEP  # the player's first chord on step 3: beat 1 of the bar
    chord = [(start + 0.001, on(p)) for p in (57, 60, 64)] + [(start + 3.8 * STEP, off(p)) for p in (57, 60, 64)]
    sim.run(13, chord)
    worker = sim.engine.responder.worker
    assert worker.stepper.variation == 0.3
    assert sim.model_steps()[0] == 11  # the wait ends at step 9; the bar line after it counted from step 3: 11
    # what the stepper read since its last reset is a run of the timeline, each token with its step's position
    entries = [(entry.index, (entry.step - 3) % 8) for entry in sim.engine.responder.timeline.entries]
    assert fed and any(entries[k : k + len(fed)] == fed for k in range(len(entries) - len(fed) + 1)), (fed, entries)
    sim.engine.apply(Action("variation", 0.8))  # during the answer (steps 11-18): from its next token on
    sim.run(17)
    assert worker.stepper.variation == 0.8
    sim.close()
