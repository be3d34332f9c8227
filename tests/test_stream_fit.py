"""``fit`` on shard folders: the streamed data equals the in-memory data, and a streamed run trains and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from lofi_live.errors import LofiError  # noqa: E402
from midi_factory import random_song, write_onsets  # noqa: E402
from training.cli import main as lofi_train  # noqa: E402
from training.fit.data import build_data, build_stream_data  # noqa: E402
from training.fit.loop import make_dataset  # noqa: E402

WINDOW = 8


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 9 files as one corpus file and as a folder of 4 shards."""
    root = tmp_path_factory.mktemp("stream")
    for number in range(9):
        write_onsets(root / "midi" / f"song{number}.mid", random_song(number, 30 + 7 * number))
    write_onsets(root / "midi" / "tiny.mid", random_song(99, 4))  # shorter than a window
    common = ["--no-cache", "--workers", "1"]
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(root / "one.json"), *common]) == 0
    assert lofi_train(["prepare", str(root / "midi"), "-o", str(root / "shards"), "--shard-files", "3", *common]) == 0
    return root / "one.json", root / "shards"


def options(corpus: Path, **changes: object) -> dict:
    base = dict(corpora=[str(corpus)], window=WINDOW, stride=1, transpose=False, oversample=None, loop_short=False,
                loop_times=1, val_fraction=0.2, val_files=None, seed=3, min_count=1, vocab_corpora=[])
    return {**base, **changes}


def all_windows(data) -> list[tuple]:
    rows = [(tuple(np.ravel(x)), int(y)) for inputs, targets in data for x, y in zip(inputs.numpy(), targets.numpy())]
    return sorted(rows)


@pytest.mark.parametrize("changes", [{}, {"transpose": True, "loop_short": True, "stride": 3, "loop_times": 2},
                                     {"val_files": ["song[12].mid"], "min_count": 2}])
def test_streamed_data_equals_the_in_memory_data(corpora: tuple[Path, Path], changes: dict) -> None:
    single, shards = corpora
    memory, memory_train, memory_val = build_data(options(single, **changes), None)
    streamed, train, val = build_stream_data(options(shards, **changes), None)
    for key in ("vocabulary", "seed_windows", "baselines", "tokens"):
        assert streamed[key] == memory[key], key
    differing = {k for k in memory["data"] if memory["data"][k] != streamed["data"].get(k)}
    assert differing == {"corpus", "corpora"}
    assert len(train) == len(memory_train) and len(val) == len(memory_val)
    vocab = len(memory["vocabulary"])
    for windows, streamed_windows, shuffle in ((memory_train, train, True), (memory_val, val, False)):
        expected = all_windows(make_dataset(windows, "index", vocab, 16, False, 0))
        assert all_windows(make_dataset(streamed_windows, "index", vocab, 16, shuffle, 0)) == expected


def test_oversample_and_vary_loops_are_refused_on_shards(corpora: tuple[Path, Path]) -> None:
    with pytest.raises(LofiError, match="--oversample needs every window in memory"):
        build_stream_data(options(corpora[1], oversample=5), None)
    with pytest.raises(LofiError, match="--vary-loops needs every window in memory"):
        build_stream_data(options(corpora[1], vary_loops=3), None)


def test_fit_streams_a_shard_folder_and_exports(corpora: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = corpora
    run = tmp_path / "run"
    common = ["fit", str(shards), "-o", str(run), "--window", str(WINDOW), "--batch-size", "16", "--seed", "1"]
    assert lofi_train([*common, "--epochs", "1"]) == 0
    stored = json.loads((run / "run.json").read_text())
    assert stored["data"]["streamed"] is True and stored["epochs_done"] == 1
    assert lofi_train([*common, "--epochs", "2"]) == 0  # resumes on the same shard folder
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and (run / "curves.png").exists()
    assert lofi_train(["export", str(run), "-o", str(tmp_path / "model")]) == 0
    assert json.loads((tmp_path / "model.json").read_text())["vocabulary"] == stored["vocabulary"]
