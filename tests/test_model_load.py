"""Loading an exported model: every broken file is refused with one clear line (real ONNX Runtime)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lofi_live.errors import LofiError
from lofi_live.model.loader import Model, cuda_problem, default_model_path, resolve_model_path
from model_fixtures import VOCABULARY, build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def copy(tiny, tmp_path) -> Path:
    """A private copy of the tiny model's files, free to damage."""
    for file in tiny.parent.iterdir():
        shutil.copy(file, tmp_path / file.name)
    return tmp_path / tiny.name


def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _error(path) -> str:
    with pytest.raises(LofiError) as caught:
        Model.load(path, provider="cpu")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_loads_and_describes(tiny):
    model = Model.load(tiny)
    assert model.name == "tiny"
    assert model.vocabulary == VOCABULARY
    assert model.index["C4"] == 0
    assert model.window == 32 and model.grid_beats == 0.5
    assert model.provider in ("cpu", "cuda")
    assert model.meta["preset"] == "test"
    assert model.has_step_graph
    probs = model.window_probs(np.zeros((3, 32), np.int64))
    assert probs.shape == (3, len(VOCABULARY))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("suffix", ["", ".json", ".onnx", ".step.onnx"])
def test_path_forms(tiny, suffix):
    given = tiny.with_suffix("").as_posix() + suffix
    assert resolve_model_path(given) == tiny
    assert Model.load(given, provider="cpu").name == "tiny"


def test_default_path_and_env(monkeypatch, tiny):
    monkeypatch.delenv("LOFI_LIVE_MODEL", raising=False)
    assert default_model_path() == ROOT / "exported_models" / "lofi"
    monkeypatch.setenv("LOFI_LIVE_MODEL", str(tiny.with_suffix("")))
    assert Model.load(None, provider="cpu").name == "tiny"


def test_missing_model(tmp_path):
    assert "no such model" in _error(tmp_path / "nothing")


def test_invalid_json(copy):
    copy.write_text("{not json")
    assert "not valid JSON" in _error(copy)


def test_tampered_json_field(copy):
    _edit_json(copy, lambda meta: meta.pop("vocabulary"))
    assert "vocabulary" in _error(copy)


def test_bad_vocabulary_token(copy):
    _edit_json(copy, lambda meta: meta["vocabulary"].__setitem__(3, "H9"))
    assert "bad vocabulary entry" in _error(copy)


def test_wrong_checksum(copy):
    _edit_json(copy, lambda meta: meta["graphs"]["window"].__setitem__("sha256", "0" * 64))
    assert "checksum differs" in _error(copy)


def test_tampered_onnx(copy):
    onnx = copy.with_suffix(".onnx")
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    assert "checksum differs" in _error(copy)


def test_truncated_onnx_with_matching_checksum(copy):
    onnx = copy.with_suffix(".onnx")
    data = onnx.read_bytes()[:200]
    onnx.write_bytes(data)
    _edit_json(copy, lambda meta: meta["graphs"]["window"].__setitem__("sha256", hashlib.sha256(data).hexdigest()))
    assert "not a valid ONNX graph" in _error(copy)


def test_missing_step_file(copy):
    copy.with_name("tiny.step.onnx").unlink()
    assert "missing" in _error(copy)


def test_vocabulary_size_mismatch(tmp_path):
    path = build_model(tmp_path, output_size=len(VOCABULARY) + 3)
    assert "vocabulary size" in _error(path)


def test_vocabulary_shorter_than_output(copy):
    _edit_json(copy, lambda meta: meta["vocabulary"].pop())
    message = _error(copy)
    assert "vocabulary size" in message or "seed_windows" in message or "baselines" in message


def test_window_mismatch(copy):
    _edit_json(copy, lambda meta: (meta.__setitem__("window", 16), meta.__setitem__("seed_windows", [])))
    assert "expected [N, 16]" in _error(copy)


def test_encoding_mismatch(copy):
    _edit_json(copy, lambda meta: meta.__setitem__("input_encoding", "scaled"))
    assert "input_encoding" in _error(copy)


def test_input_name_mismatch(copy):
    _edit_json(copy, lambda meta: meta["graphs"]["window"].__setitem__("input", "x"))
    assert "'x'" in _error(copy)


def test_step_states_mismatch(copy):
    _edit_json(copy, lambda meta: meta["graphs"]["step"].__setitem__("states", [["h0", 24], ["c0", 24]]))
    assert "step graph inputs" in _error(copy)


def test_unknown_provider(tiny):
    with pytest.raises(LofiError, match="unknown provider"):
        Model.load(tiny, provider="tpu")


def test_cuda_forced_without_cuda_is_a_clear_error(tiny):
    if cuda_problem() is None:
        pytest.skip("CUDA is usable here")
    with pytest.raises(LofiError, match="CUDA is not usable here"):
        Model.load(tiny, provider="cuda")


def test_auto_falls_back_to_cpu_quietly(tiny):
    """On a CPU-only machine ``auto`` picks the CPU and onnxruntime prints nothing about CUDA."""
    if cuda_problem() is None:
        pytest.skip("CUDA is usable here")
    code = f"from lofi_live.model.loader import Model; print(Model.load({str(tiny)!r}).provider)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cpu"
    assert "CUDA" not in done.stderr and "cuda" not in done.stderr.lower()


def test_cli_bad_model_exits_2_with_one_line(copy, tmp_path):
    copy.write_text("[]")
    done = subprocess.run(
        [sys.executable, "-m", "lofi_live.cli", "generate", "--model", str(copy), "-o", str(tmp_path / "o.mid")],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected a JSON object" in lines[0]
