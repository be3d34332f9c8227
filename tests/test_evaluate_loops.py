"""``lofi-live evaluate`` measures listening: copy baselines, the onset pitch-class Jaccard and ``--loops``,
each checked against the definition counted the slow obvious way, on real ``.mid`` files and real ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lofi_live.cli import main
from lofi_live.commands.evaluate import evaluate_stream, loop_protocol, timed_folder
from lofi_live.midi.files import NoteEvent, write_midi
from lofi_live.model.copy_baselines import PERIODS, SPAN
from lofi_live.model.loader import Model
from lofi_live.tokens import rules as token_rules
from lofi_live.tokens.grid import tokens_to_notes
from model_fixtures import build_grid_token_model
from test_evaluate_grid import _stream

SHARED_LOFI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lofi"


@pytest.fixture(scope="module")
def grid_model(tmp_path_factory) -> Path:
    return build_grid_token_model(tmp_path_factory.mktemp("grid-loops"), seed=5, window=8)


def _kind(token: str) -> int:
    return {"hold": 1, "rest": 2}.get(token, 0)


def _naive_copies(model: Model, stream: list[str], scored: list[int], floors: list[int]) -> dict:
    """The copy baselines by their definition, one position at a time."""
    ids = model.encode(stream)
    truth = [model.index.get(t, -1) for t in stream]
    found: dict[str, list[float]] = {}

    def score(name: str, t: int, period: int) -> None:
        source = t - period
        ok = period > 0 and source >= floors[k]
        found.setdefault(f"baseline_{name}_top1", []).append(ok and ids[source] == truth[t])
        found.setdefault(f"baseline_{name}_rhythm_accuracy", []).append(ok and _kind(stream[source]) == _kind(stream[t]))
        if _kind(stream[t]) == 0:
            onsets = [j for j in range(floors[k], source + 1) if _kind(stream[j]) == 0] if ok else []
            found.setdefault(f"baseline_{name}_onset_top1", []).append(bool(onsets) and ids[onsets[-1]] == truth[t])

    for k, t in enumerate(scored):
        score("copy8", t, 8)
        score("copy16", t, 16)
        best, chosen = -1.0, 0
        for period in PERIODS:
            if t - period < floors[k]:
                continue
            # compared where either token is an onset
            pairs = [(ids[i], ids[i - period]) for i in range(max(t - SPAN, floors[k] + period), t)
                     if _kind(stream[i]) == 0 or _kind(stream[i - period]) == 0]
            if pairs and sum(a == b for a, b in pairs) / len(pairs) > best:
                best, chosen = sum(a == b for a, b in pairs) / len(pairs), period
        score("copy_adaptive", t, chosen)
    return {key: float(np.mean(values)) for key, values in found.items()}


def _naive_jaccard(model: Model, stream: list[str], scored: list[int], floors: list[int]) -> float:
    ids = model.encode(stream)
    onset = [i for i, t in enumerate(model.vocabulary) if _kind(t) == 0]
    values = []
    for k, t in enumerate(scored):
        if _kind(stream[t]) != 0:
            continue
        probs = model.window_probs(np.array([ids[max(t - model.window, floors[k]) : t]]), cache=False)[0]
        guess = token_rules.token_pitch_classes(model.vocabulary[max(onset, key=lambda i: probs[i])])
        true = token_rules.token_pitch_classes(stream[t])
        values.append(len(guess & true) / len(guess | true))
    return float(np.mean(values))


def test_copy_baselines_and_jaccard_match_their_definitions(grid_model):
    model = Model.load(grid_model, provider="cpu")
    rng = np.random.default_rng(3)
    loop = _stream(rng, 12, pitches=14)
    # a 12-step loop, varied now and then, after some free playing: every period has something to find
    stream = _stream(rng, 20, pitches=14) + [t if rng.random() > 0.15 else "hold" for _ in range(8) for t in loop]
    got = evaluate_stream(model, stream)
    scored = list(range(model.window, len(stream)))
    expected = _naive_copies(model, stream, scored, [0] * len(scored))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert got["network_onset_pc_jaccard"] == pytest.approx(_naive_jaccard(model, stream, scored, [0] * len(scored)))
    # the loop is found: the adaptive copy beats copying a bar back on this 12-step loop
    assert got["baseline_copy_adaptive_top1"] > got["baseline_copy8_top1"] and got["baseline_copy_adaptive_top1"] > 0.6


def _write(folder: Path, name: str, tokens: list[str], end_beats: float | None = None) -> Path:
    return write_midi(folder / name, [("piano", tokens_to_notes(tokens))], bpm=90, end_beats=end_beats)


def test_loops_play_each_file_twice_and_score_the_second_pass(grid_model, tmp_path, capsys):
    one_bar = ["0.4.7", "hold", "hold", "rest", "9.0.4", "hold", "E4", "hold"]
    # 1.5 bars of notes, padded to 2 bars; the file's track runs on 3 more bars, which a loop leaves out
    three_halves = ["2.5.9", "hold", "hold", "hold", "C4", "rest", "D4", "hold", "7.11.2", "hold", "hold", "hold"]
    _write(tmp_path, "a.mid", one_bar)
    _write(tmp_path, "b.mid", three_halves, end_beats=20.0)
    files, used, failed = timed_folder(tmp_path, loops=True)
    assert [f.name for f in used] == ["a.mid", "b.mid"] and not failed
    assert files[0].tokens == one_bar * 2 and files[0].end_step == 16
    assert files[1].tokens == (three_halves + ["rest"] * 4) * 2 and files[1].end_step == 32
    stream, positions, scored, floors = loop_protocol(files)
    assert positions == [i % 8 for i in range(16)] + [i % 8 for i in range(32)]
    assert scored.tolist() == list(range(8, 16)) + list(range(16 + 16, 16 + 32))
    assert floors.tolist() == [0] * 8 + [16] * 16
    model = Model.load(grid_model, provider="cpu")
    got = evaluate_stream(model, stream, positions, scored, floors)
    assert got["n"] == 24
    # copying one loop back is exact on the second pass: one bar back for a, two for b
    assert got["baseline_copy8_top1"] >= 8 / 24 and got["baseline_copy16_top1"] >= 16 / 24
    expected = _naive_copies(model, stream, scored.tolist(), floors.tolist())
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    # the network reads only the file's own tokens: contexts never reach into the file before
    assert got["network_onset_pc_jaccard"] == pytest.approx(_naive_jaccard(model, stream, scored.tolist(), floors.tolist()))
    assert main(["evaluate", "--model", str(grid_model), str(tmp_path), "--loops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(got)
    assert main(["evaluate", "--model", str(grid_model), str(tmp_path), "--loops"]) == 0
    table = capsys.readouterr().out
    assert "adaptive loop copy onset top-1" in table and "second pass scored" in table


def test_positions_follow_the_beat_grid_across_a_cut_silence(tmp_path):
    # two bars and a half of silence are cut to 8 rests; the chord after it is still on beat 1 of bar 4
    notes = [NoteEvent(0.0, 1.0, 60), NoteEvent(12.0, 2.0, 64)]
    write_midi(tmp_path / "gap.mid", [("piano", notes)], bpm=90)
    files, _, _ = timed_folder(tmp_path)
    timed = files[0]
    assert timed.tokens == ["C4", "hold"] + ["rest"] * 8 + ["E4", "hold", "hold", "hold"]
    assert timed.steps[timed.tokens.index("E4")] == 24 and timed.positions[timed.tokens.index("E4")] == 0


def test_loops_needs_a_grid_model(tmp_path, capsys):
    from model_fixtures import build_model

    seed_model = build_model(tmp_path / "m", seed=1)
    _write(tmp_path / "data", "a.mid", ["0.4.7", "hold"] * 20)
    assert main(["evaluate", "--model", str(seed_model), str(tmp_path / "data"), "--loops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--loops needs a grid model" in err[0]


@pytest.mark.skipif(not SHARED_LOFI.is_dir(), reason="the shared LoFi data (../shared/data/lofi) is absent")
def test_shipped_model_on_held_out_loops_reports_every_baseline(capsys):
    assert main(["evaluate", str(SHARED_LOFI), "--held-out", "--loops", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for name in ("copy8", "copy16", "copy_adaptive"):
        for metric in ("top1", "rhythm_accuracy", "onset_top1"):
            assert 0.0 <= result[f"baseline_{name}_{metric}"] <= 1.0
    assert 0.0 < result["network_onset_pc_jaccard"] < 1.0 and result["n_onsets"] > 100
    # on a loop played twice, copying one period back is a real baseline: it names most rhythm classes
    assert result["baseline_copy_adaptive_rhythm_accuracy"] > 0.5



def test_files_selects_by_name(grid_model, tmp_path, capsys):
    tokens = ["0.4.7", "hold", "hold", "rest", "9.0.4", "hold", "E4", "hold"] * 3
    _write(tmp_path, "MLP - one.mid", tokens)
    _write(tmp_path, "other.mid", ["C4", "hold"] * 40)
    assert main(["evaluate", "--model", str(grid_model), str(tmp_path), "--files", "*MLP*", "--loops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(tokens)
    assert main(["evaluate", "--model", str(grid_model), str(tmp_path), "--files", "none*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "among those selected" in err[0]
