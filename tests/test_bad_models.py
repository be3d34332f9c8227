"""Bad models in every command that takes ``--model`` (issue 6, item 4), through the real console scripts:
one line on stderr naming the file and the reason, exit code 2, no traceback (see tests/test_bad_input.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bad_input_helpers import LOFI_LIVE, assert_one_line, good_midi, run_cli
from model_fixtures import build_model


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_models")


@pytest.fixture(scope="module")
def model(work) -> Path:
    return build_model(work / "model", units=(16,))


# --------------------------------------------------------------------------------------------
# Models: every command that takes --model refuses a bad one


def _tamper(folder: Path, source: Path, case: str) -> tuple[Path, Path, tuple[str, ...]]:
    """A copy of the tiny model, damaged as ``case`` says; returns (--model path, path to name, reasons)."""
    target = folder / case
    shutil.copytree(source.parent, target)
    meta_path = target / source.name
    meta = json.loads(meta_path.read_text())
    onnx = target / meta["graphs"]["window"]["file"]
    named, reasons = meta_path, ()
    if case == "vocab_removed":
        meta["vocabulary"] = meta["vocabulary"][:-1]
        meta["seed_windows"] = []
        meta.pop("baselines")
        named, reasons = onnx, ("vocabulary size",)
    elif case == "vocab_renamed":
        meta["vocabulary"][0] = "C#7"  # same size, another token: only the recorded vocabulary digest can tell
        reasons = ("vocabulary",)
    elif case == "vocab_duplicate":
        meta["vocabulary"][1] = meta["vocabulary"][0]
        reasons = ("duplicate",)
    elif case == "vocab_bad_token":
        meta["vocabulary"][0] = "H9"
        reasons = ("vocabulary entry",)
    elif case == "window_edited":
        meta["window"] = 16
        meta["seed_windows"] = []
        named, reasons = onnx, ("shape",)
    elif case == "checksum_edited":
        meta["graphs"]["window"]["sha256"] = "0" * 64
        named, reasons = onnx, ("checksum",)
    elif case == "onnx_truncated":
        data = onnx.read_bytes()
        onnx.write_bytes(data[: len(data) // 2])
        named, reasons = onnx, ("checksum",)
    elif case == "onnx_truncated_rehashed":
        import hashlib

        data = onnx.read_bytes()[:200]
        onnx.write_bytes(data)
        meta["graphs"]["window"]["sha256"] = hashlib.sha256(data).hexdigest()
        named, reasons = onnx, ("not a valid onnx graph",)
    elif case == "onnx_missing":
        onnx.unlink()
        named, reasons = onnx, ("missing",)
    elif case == "not_json":
        meta_path.write_text("this is { not JSON")
        return meta_path, meta_path, ("not valid json",)
    elif case == "binary_json":
        meta_path.write_bytes(bytes((i * 73 + 5) % 256 for i in range(600)))
        return meta_path, meta_path, ("not",)
    elif case == "empty_json":
        meta_path.write_text("")
        return meta_path, meta_path, ("not valid json",)
    elif case == "json_list":
        meta_path.write_text("[]")
        return meta_path, meta_path, ("json object",)
    elif case == "deep_nesting":
        meta_path.write_text("[" * 100_000 + "]" * 100_000)
        return meta_path, meta_path, ("nested too deeply",)
    elif case == "json_fifo":
        meta_path.unlink()
        os.mkfifo(meta_path)
        return meta_path, meta_path, ("not a regular file",)
    elif case == "json_folder":
        meta_path.unlink()
        meta_path.mkdir()
        return meta_path, meta_path, ("folder",)
    elif case == "window_string":
        meta["window"] = "32"
        reasons = ("window",)
    elif case == "window_float":
        meta["window"] = 32.5
        reasons = ("window",)
    elif case == "vocabulary_dict":
        meta["vocabulary"] = {"C4": 0}
        reasons = ("vocabulary",)
    elif case == "grid_string":
        meta["grid_beats"] = "half"
        reasons = ("grid_beats",)
    elif case == "grid_list":
        meta["grid_beats"] = [0.5]
        reasons = ("grid_beats",)
    elif case == "graphs_list":
        meta["graphs"] = ["tiny.onnx"]
        reasons = ("graphs",)
    elif case == "graph_file_path":
        meta["graphs"]["window"]["file"] = "../../etc/passwd"
        reasons = ("plain file name",)
    elif case == "states_odd":
        meta["graphs"]["step"]["states"] = [["h0", "16"]]
        reasons = ("states",)
    elif case == "encoding_odd":
        meta["input_encoding"] = ["index"]
        reasons = ("input_encoding",)
    elif case == "baselines_odd":
        meta["baselines"] = {"unigram_counts": ["a"] * len(meta["vocabulary"]), "bigram_next": "x"}
        reasons = ("baselines",)
    elif case == "format_future":
        meta["format"] = 2
        reasons = ("format",)
    else:  # pragma: no cover
        raise AssertionError(case)
    meta_path.write_text(json.dumps(meta))
    return meta_path, named, reasons


MODEL_CASES = [
    "vocab_removed", "vocab_renamed", "vocab_duplicate", "vocab_bad_token", "window_edited", "checksum_edited",
    "onnx_truncated", "onnx_truncated_rehashed", "onnx_missing", "not_json", "binary_json", "empty_json", "json_list", "deep_nesting", "json_folder", "json_fifo",
    "window_string", "window_float", "vocabulary_dict", "grid_string", "grid_list", "graphs_list", "graph_file_path",
    "states_odd", "encoding_odd", "baselines_odd", "format_future",
]


@pytest.fixture(scope="module")
def tampered(work, model) -> dict[str, tuple[Path, Path, tuple[str, ...]]]:
    folder = work / "tampered"
    folder.mkdir()
    return {case: _tamper(folder, model, case) for case in MODEL_CASES}


def _model_command(command: str, model: Path, work: Path, good_seed: Path) -> list[str]:
    if command == "generate":
        return [LOFI_LIVE, "generate", "--model", str(model), "--steps", "4", "--provider", "cpu",
                "-o", str(work / "tampered_out.mid")]
    if command == "evaluate":
        return [LOFI_LIVE, "evaluate", "--model", str(model), "--provider", "cpu", "--tokenizer", "mido",
                str(good_seed.parent)]
    if command == "bench":
        return [LOFI_LIVE, "bench", "--model", str(model), "--provider", "cpu", "--no-keras", "--no-live", "--steps", "50"]
    return [LOFI_LIVE, "run", "--model", str(model), "--provider", "cpu", "--backend", "jack", "--duration", "1",
            "--quiet", "--name", "LoFi Bad Model"]


@pytest.fixture(scope="module")
def good_seed(work) -> Path:
    folder = work / "good_data"
    folder.mkdir()
    for seed in range(2):
        good_midi(folder / f"song_{seed}.mid", seed)
    return folder / "song_0.mid"


@pytest.mark.parametrize("command", ["generate", "evaluate", "bench", "run"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_bad_model(case, command, tampered, work, good_seed, request):
    if command == "run":
        request.getfixturevalue("jack_server")
    model, named, reasons = tampered[case]
    result = run_cli(*_model_command(command, model, work, good_seed), timeout=60)
    assert_one_line(result, named, reasons)


@pytest.mark.parametrize("command", ["generate", "evaluate", "bench"])
def test_model_with_extra_fields_loads(command, work, model, good_seed):
    """Unknown extra fields are ignored (forward compatible), not an error."""
    folder = work / "extra_fields"
    if not folder.exists():
        shutil.copytree(model.parent, folder)
        meta = json.loads((folder / model.name).read_text())
        meta["future_field"] = {"anything": [1, 2, None]}
        meta["graphs"]["window"]["comment"] = 7
        (folder / model.name).write_text(json.dumps(meta))
    result = run_cli(*_model_command(command, folder / model.name, work, good_seed), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
