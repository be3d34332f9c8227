"""``lofi-live bench --json``: the documented keys, on a tiny model (latency targets are checked in docs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lofi_live.cli import main
from model_fixtures import build_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("bench"), units=(64,))


def test_bench_json_shape(tiny, capsys):
    assert main(["bench", "--model", str(tiny), "--seed-model", str(tiny), "--steps", "200", "--no-live", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for figures in (result, result["seed_preset"]):
        for key in ("onnx_window", "onnx_step"):
            assert set(figures[key]) == {"median_ms", "p99_ms"}
            assert 0 < figures[key]["median_ms"] <= figures[key]["p99_ms"]
        assert 0 < figures["generate_500_s"] < 10
        assert figures["ratios"]["onnx_window_over_onnx_step"] > 0
    assert "keras_window" not in result  # no Keras checkpoint behind the test model
    assert any("Keras" in note or "TensorFlow" in note for note in result["notes"])
    assert set(result["targets"]) >= {"onnx_step_p99_ms", "generate_500_s"}


@pytest.mark.jack
@pytest.mark.slow
def test_bench_live_start(tiny, jack_server, capsys):
    from lofi_live.commands.bench import live_start
    from lofi_live.model.loader import Model

    figures, note = live_start(Model.load(tiny, provider="cpu"))
    assert note is None, note
    assert 0 < figures["first_note_s"] < 15
    assert 20 < figures["rss_mb"] < 2000


def test_bench_finds_the_shipped_seed_preset_model():
    """Without --seed-model the seed comparison runs on the shipped lofi-seed (the seed article's tokens)."""
    from lofi_live.commands.bench import _seed_model_path
    from lofi_live.model.loader import Model

    found = _seed_model_path(None)
    assert found is not None and found.name == "lofi-seed.json"
    assert Model.load(found, provider="cpu").tokens == "seed"
