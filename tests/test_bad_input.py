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
from pathlib import Path

import pytest

from bad_input_helpers import LOFI_LIVE, LOFI_TRAIN, MIDI_CASES, assert_one_line, good_midi, make_case, run_cli
from model_fixtures import VOCABULARY, build_model


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
    return {case: make_case(folder, case) for case in MIDI_CASES}


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
    path = make_case(folder, case)
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
        make_case(folder, case)
    result = run_cli(LOFI_LIVE, "evaluate", "--model", str(model), "--tokenizer", "mido", "--provider", "cpu", str(folder))
    line = assert_one_line(result, folder, ("no readable",))
    assert "6 files failed" in line, line  # missing, folder and fifo are not files


def test_evaluate_folder_mixed(model, work):
    """Good and bad files: each bad file is skipped with a one-line note, the good ones are scored."""
    folder = work / "eval_mixed"
    folder.mkdir()
    for seed in range(3):
        good_midi(folder / f"good_{seed}.mid", seed)
    bad = {case: make_case(folder, case) for case in MIDI_CASES if case not in ("missing", "folder", "fifo")}
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
    target = work / "no_such_folder" if where == "missing" else good_midi(work / "a_file_not_a_folder.mid")
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
            path = make_case(folder, case, path.name)
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
    target = {"missing": work / "prepare_missing", "file": good_midi(work / "prepare_file.mid"),
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
    good_midi(folder / "good.mid")
    for case in ("corrupt", "truncated", "empty", "huge", "zero_tracks", "not_midi"):
        make_case(folder, case)
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
        path.write_bytes(good_midi(folder / "corpus_is_midi.mid").read_bytes())
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
        run_dir = named = good_midi(work / "export_run_is_a_file.mid")
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
