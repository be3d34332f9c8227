"""Bad files and bad models in every command (issue 6, items 3 and 4), through the real console scripts.

Every case must end with exactly one line on stderr that names the file at fault and the reason,
exit code 2, and no traceback. The inputs are made once per module (a sparse file stands for a huge
one, so nothing big is written); the runtime commands use the tiny ONNX model of
``tests/model_fixtures.py``. The ``lofi-train`` cases all fail before TensorFlow is imported, so the
module runs in a minute without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lofi_live.midi.files import MAX_MIDI_BYTES
from lofi_live.recording.session import MAX_JOURNAL_BYTES
from midi_factory import random_song, write_onsets
from model_fixtures import VOCABULARY, build_model

BIN = Path(sys.executable).parent
LOFI_LIVE = str(BIN / "lofi-live")
LOFI_TRAIN = str(BIN / "lofi-train")
#: A 0-track Standard MIDI File: a complete MThd chunk, nothing after it.
ZERO_TRACK_MIDI = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + (0).to_bytes(2, "big") + (480).to_bytes(2, "big")

#: The bad-file cases: name -> (what the line must say, as lower-case alternatives).
MIDI_CASES = {
    "corrupt": ("corrupt",),
    "truncated": ("truncated", "corrupt"),
    "empty": ("empty",),
    "huge": ("too large",),
    "zero_tracks": ("no tracks",),
    "not_midi": ("not a midi file",),
    "missing": ("no such file",),
    "folder": ("folder",),
    "fifo": ("not a regular file",),
}


def _good_midi(path: Path, seed: int = 1, length: int = 80) -> Path:
    return write_onsets(path, random_song(seed, length))


def _make_case(folder: Path, case: str, name: str | None = None) -> Path:
    """One bad input named ``<case>.mid`` (or ``name``) in ``folder``."""
    path = folder / (name or f"{case}.mid")
    if case == "corrupt":
        good = _good_midi(folder / "_good_for_corrupt.mid").read_bytes()
        (folder / "_good_for_corrupt.mid").unlink()
        # a real header, then the track chunk's bytes scrambled and its length field claiming far more
        body = bytearray(good)
        track = body.index(b"MTrk")
        body[track + 4 : track + 8] = (10**6).to_bytes(4, "big")
        body[track + 8 :] = bytes((i * 37 + 11) % 256 for i in range(len(body) - track - 8))
        path.write_bytes(bytes(body))
    elif case == "truncated":
        good = _good_midi(folder / "_good_for_truncated.mid").read_bytes()
        (folder / "_good_for_truncated.mid").unlink()
        path.write_bytes(good[: len(good) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "huge":
        with path.open("wb") as handle:
            handle.write(ZERO_TRACK_MIDI)
        # sparse: takes no disk space; over both the MIDI and the journal size limits
        os.truncate(path, max(MAX_MIDI_BYTES, MAX_JOURNAL_BYTES) + 1)
    elif case == "zero_tracks":
        path.write_bytes(ZERO_TRACK_MIDI)
    elif case == "not_midi":
        path.write_text("this is a text file with a .mid name\n" * 20)
    elif case == "missing":
        pass
    elif case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)  # reading it would block for ever: must be refused before opening
    else:  # pragma: no cover - a typo in a parametrization
        raise AssertionError(case)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def model(work) -> Path:
    return build_model(work / "model", units=(16,))


@pytest.fixture(scope="module")
def bad_files(work) -> dict[str, Path]:
    folder = work / "bad"
    folder.mkdir()
    return {case: _make_case(folder, case) for case in MIDI_CASES}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", LOFI_LIVE_CACHE=str(Path(os.environ.get("TMPDIR", "/tmp")) / "lofi-bad-input-cache"))
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess, names: Path | str, reasons: tuple[str, ...] = ()) -> str:
    """Exit code 2, no traceback, exactly one stderr line naming ``names`` and giving one of ``reasons``."""
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    lines = err.splitlines()
    assert result.returncode == 2, f"rc {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert str(names) in line, f"{names} not named in: {line}"
    if reasons:
        assert any(reason in line.lower() for reason in reasons), f"none of {reasons} in: {line}"
    return line


# --------------------------------------------------------------------------------------------
# MIDI files in every command that reads one


@pytest.mark.parametrize("case", sorted(MIDI_CASES))
def test_generate_seed_midi(case, bad_files, model, work):
    result = run_cli(LOFI_LIVE, "generate", "--model", str(model), "--seed-midi", str(bad_files[case]),
                     "--steps", "4", "--provider", "cpu", "-o", str(work / f"gen_{case}.mid"))
    assert_one_line(result, bad_files[case], MIDI_CASES[case])
    assert not (work / f"gen_{case}.mid").exists()


@pytest.mark.parametrize("case", sorted(MIDI_CASES))
def test_plot(case, bad_files, work):
    pytest.importorskip("matplotlib")
    result = run_cli(LOFI_LIVE, "plot", str(bad_files[case]), "-o", str(work / f"plot_{case}.png"))
    assert_one_line(result, bad_files[case], MIDI_CASES[case])


@pytest.mark.parametrize("case", sorted(MIDI_CASES))
def test_run_seed_midi(case, bad_files, model, jack_server):
    result = run_cli(LOFI_LIVE, "run", "--model", str(model), "--seed-midi", str(bad_files[case]), "--provider", "cpu",
                     "--backend", "jack", "--duration", "1", "--quiet", "--name", f"LoFi Bad {case}", timeout=60)
    assert_one_line(result, bad_files[case], MIDI_CASES[case])


@pytest.mark.parametrize("case", sorted(MIDI_CASES))
def test_evaluate_folder_of_one_bad_file(case, model, work):
    """A folder whose only file is bad: one line naming that file and why (nothing to evaluate)."""
    folder = work / f"eval_only_{case}"
    folder.mkdir()
    path = _make_case(folder, case)
    result = run_cli(LOFI_LIVE, "evaluate", "--model", str(model), "--tokenizer", "mido", "--provider", "cpu", str(folder))
    if case in ("missing", "folder", "fifo"):
        # a folder that holds no file at all (a sub-folder or a pipe named x.mid is not a file)
        assert_one_line(result, folder, ("no .mid",))
    else:
        assert_one_line(result, path, MIDI_CASES[case])


def test_evaluate_folder_all_bad(model, work):
    """Several bad files and nothing else: one line naming the folder, the count and the first failure."""
    folder = work / "eval_all_bad"
    folder.mkdir()
    for case in MIDI_CASES:
        _make_case(folder, case)
    result = run_cli(LOFI_LIVE, "evaluate", "--model", str(model), "--tokenizer", "mido", "--provider", "cpu", str(folder))
    line = assert_one_line(result, folder, ("no readable",))
    assert "6 files failed" in line, line  # missing, folder and fifo are not files


def test_evaluate_folder_mixed(model, work):
    """Good and bad files: each bad file is skipped with a one-line note, the good ones are scored."""
    folder = work / "eval_mixed"
    folder.mkdir()
    for seed in range(3):
        _good_midi(folder / f"good_{seed}.mid", seed)
    bad = {case: _make_case(folder, case) for case in MIDI_CASES if case not in ("missing", "folder", "fifo")}
    result = run_cli(LOFI_LIVE, "evaluate", "--model", str(model), "--tokenizer", "mido", "--provider", "cpu",
                     "--json", str(folder))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad), result.stderr
    for case, path in bad.items():
        (line,) = [line for line in lines if str(path) in line]
        assert line.startswith("skipped ") and any(r in line.lower() for r in MIDI_CASES[case]), line
    assert json.loads(result.stdout)["n"] > 0


@pytest.mark.parametrize("where", ["missing", "file"])
def test_evaluate_not_a_folder(where, model, bad_files, work):
    target = work / "no_such_folder" if where == "missing" else _good_midi(work / "a_file_not_a_folder.mid")
    result = run_cli(LOFI_LIVE, "evaluate", "--model", str(model), "--provider", "cpu", str(target))
    assert_one_line(result, target, ("no such folder",) if where == "missing" else ("not a folder",))


# --------------------------------------------------------------------------------------------
# lofi-live export: journals (and a .mid where a journal is expected)

JOURNAL_CASES = {
    "corrupt": ("not a lofi-live session journal",),
    "truncated": ("truncated",),
    "empty": ("empty",),
    "huge": ("too large",),
    "zero_tracks": ("is a midi file",),
    "not_midi": ("not a lofi-live session journal",),
    "missing": ("no such file",),
    "folder": ("folder",),
    "fifo": ("not a regular file",),
}


@pytest.fixture(scope="module")
def bad_journals(work, bad_files) -> dict[str, Path]:
    folder = work / "journals"
    folder.mkdir()
    found = {}
    for case in JOURNAL_CASES:
        path = folder / f"{case}.mid.journal"
        if case == "corrupt":
            path.write_bytes(bytes((i * 73 + 5) % 256 for i in range(600)))
        elif case == "truncated":
            path.write_text("lofi-live-journal 1 bpm=120.0 star")  # cut inside the header
        elif case == "zero_tracks":
            path = bad_files["zero_tracks"]  # a MIDI file given where the journal is expected
        elif case == "not_midi":
            path = bad_files["not_midi"]
        else:
            path = _make_case(folder, case, path.name)
        found[case] = path
    return found


@pytest.mark.parametrize("recover", [False, True], ids=["export", "recover"])
@pytest.mark.parametrize("case", sorted(JOURNAL_CASES))
def test_export(case, recover, bad_journals, work):
    journal = bad_journals[case]
    out = work / f"export_{case}_{recover}.mid"
    args = ["--recover", str(journal)] if recover else [str(journal)]
    result = run_cli(LOFI_LIVE, "export", *args, "-o", str(out))
    assert_one_line(result, journal, JOURNAL_CASES[case])
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# lofi-train prepare / fit / export


@pytest.mark.parametrize("where", ["missing", "file", "empty_folder"])
def test_train_prepare_bad_folder(where, work):
    target = {"missing": work / "prepare_missing", "file": _good_midi(work / "prepare_file.mid"),
              "empty_folder": work / "prepare_empty"}[where]
    if where == "empty_folder":
        target.mkdir(exist_ok=True)
    reasons = {"missing": ("no such folder",), "file": ("not a folder",), "empty_folder": ("no .mid",)}[where]
    result = run_cli(LOFI_TRAIN, "prepare", str(target), "-o", str(work / f"corpus_{where}.json"), "--no-cache")
    assert_one_line(result, target, reasons)


def test_train_prepare_bad_files_listed(work, bad_files):
    """A folder of bad files is not fatal: prepare finishes and lists each failure with its reason."""
    folder = work / "prepare_bad_files"
    folder.mkdir()
    _good_midi(folder / "good.mid")
    for case in ("corrupt", "truncated", "empty", "huge", "zero_tracks", "not_midi"):
        _make_case(folder, case)
    pytest.importorskip("music21")
    result = run_cli(LOFI_TRAIN, "prepare", str(folder), "-o", str(work / "corpus_bad_files.json"), "--no-cache",
                     "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for case in ("corrupt", "truncated", "empty", "huge", "zero_tracks", "not_midi"):
        assert any(f"failed: {case}.mid:" in line and any(r in line.lower() for r in MIDI_CASES[case])
                   for line in result.stdout.splitlines()), result.stdout


CORPUS_CASES = {
    "corrupt": ("not a corpus file",),
    "truncated": ("not a corpus file",),
    "empty": ("empty",),
    "huge": ("too large",),
    "wrong_format": ("not a corpus file",),
    "json_list": ("not a corpus file",),
    "bad_entry": ("corrupt corpus",),
    "no_files": ("no tokenized files",),
    "deep_nesting": ("nested too deeply",),
    "gzip_truncated": ("not a corpus file",),
    "midi": ("not a corpus file",),
    "missing": ("no such",),
    "folder": ("folder",),
    "fifo": ("not a regular file",),
}


def _make_corpus_case(folder: Path, case: str) -> Path:
    path = folder / f"{case}.json"
    good = {"format": 1, "source": "x", "rules": "r", "files": [{"path": "a.mid", "sha256": "", "tokens": ["C4"] * 40}],
            "failures": []}
    if case == "corrupt":
        path.write_bytes(bytes((i * 73 + 5) % 256 for i in range(600)))
    elif case == "truncated":
        path.write_text(json.dumps(good)[:50])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "huge":
        path.write_text("{")
        os.truncate(path, 2 * 1024**3)
    elif case == "wrong_format":
        path.write_text(json.dumps({**good, "format": 99}))
    elif case == "json_list":
        path.write_text("[1, 2, 3]")
    elif case == "bad_entry":
        path.write_text(json.dumps({**good, "files": [{"path": "a.mid", "tokens": [1, 2]}]}))
    elif case == "no_files":
        path.write_text(json.dumps({**good, "files": []}))
    elif case == "deep_nesting":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "gzip_truncated":
        import gzip

        data = gzip.compress(json.dumps(good).encode())
        path = path.with_name("gzip_truncated.json.gz")
        path.write_bytes(data[: len(data) // 2])
    elif case == "midi":
        path.write_bytes(_good_midi(folder / "corpus_is_midi.mid").read_bytes())
    elif case == "folder":
        path.mkdir()
    elif case == "fifo":
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
def test_train_fit_bad_corpus(case, work):
    folder = work / "corpora"
    folder.mkdir(exist_ok=True)
    corpus = _make_corpus_case(folder, case)
    run_dir = work / f"run_{case}"
    result = run_cli(LOFI_TRAIN, "fit", str(corpus), "-o", str(run_dir), "--epochs", "1")
    assert_one_line(result, corpus, CORPUS_CASES[case])


RUN_CASES = {
    "no_checkpoint": ("no weights-improvement",),
    "corrupt_run_json": ("corrupt run file",),
    "truncated_run_json": ("corrupt run file",),
    "empty_run_json": ("corrupt run file",),
    "wrong_run_json": ("not a lofi-train run file",),
    "no_run_json": ("missing",),
    "missing": ("no such run folder",),
    "file": ("not a run folder",),
    "missing_checkpoint": ("no such checkpoint",),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_train_export_bad_run(case, work):
    run_dir = work / f"export_run_{case}"
    good = {"format": 1, "vocabulary": VOCABULARY, "window": 32, "preset": "small", "input_encoding": "index",
            "options": {}, "epochs_done": 1}
    extra: list[str] = []
    named: Path = run_dir / "run.json"
    if case == "file":
        run_dir = named = _good_midi(work / "export_run_is_a_file.mid")
    elif case == "missing":
        named = run_dir
    else:
        run_dir.mkdir()
        text = json.dumps(good)
        if case == "corrupt_run_json":
            (run_dir / "run.json").write_bytes(bytes((i * 73 + 5) % 256 for i in range(300)))
        elif case == "truncated_run_json":
            (run_dir / "run.json").write_text(text[: len(text) // 2])
        elif case == "empty_run_json":
            (run_dir / "run.json").write_text("")
        elif case == "wrong_run_json":
            (run_dir / "run.json").write_text(json.dumps({"format": 1, "window": "x"}))
        elif case == "no_run_json":
            pass
        else:
            (run_dir / "run.json").write_text(text)
            named = run_dir
            if case == "missing_checkpoint":
                named = run_dir / "weights-improvement-01-1.0000.keras"
                extra = ["--checkpoint", str(named)]
    result = run_cli(LOFI_TRAIN, "export", str(run_dir), *extra, "-o", str(work / f"exported_{case}"))
    assert_one_line(result, named, RUN_CASES[case])
    assert not (work / f"exported_{case}.json").exists()


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
        _good_midi(folder / f"song_{seed}.mid", seed)
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
