"""Bar positions through the data path: the grid tokenizer, prepare's corpora and cache, training windows,
and the loops played again with variation (``fit --vary-loops``). Real ``.mid`` files written with mido."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from midi_factory import write_clip
from lofi_live.tokens import grid
from lofi_live.tokens.rules import HOLD, REST, is_rhythm, token_pitches
from training.corpus.prepare import prepare
from training.fit import sequences, variation
from training.fit.sequences import TokenFile


def test_positions_count_grid_steps_across_a_cut_silence(tmp_path: Path) -> None:
    # a note at beat 0, then one at beat 10 (step 20): 19 silent steps cut to 8 rests
    path = write_clip(tmp_path / "gap.mid", [(0.0, 0.5, 60), (10.0, 0.5, 62)])
    tokens, positions = grid.file_grid(path)
    assert tokens == ["C4"] + [REST] * 8 + ["D4"]
    assert positions == [0, 1, 2, 3, 4, 5, 6, 7, 8 % 8, 20 % 8]
    assert grid.file_tokens(path) == tokens  # the tokens themselves are unchanged


def test_leading_rests_keep_the_first_onsets_place_in_the_bar(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "late.mid", [(1.5, 1.0, 60), (3.0, 0.5, 64)])
    tokens, positions = grid.file_grid(path)
    assert tokens == [REST, REST, REST, "C4", HOLD, REST, "E4"]
    assert positions == [0, 1, 2, 3, 4, 5, 6]


def test_prepare_records_positions_and_caches_them(tmp_path: Path) -> None:
    write_clip(tmp_path / "data" / "gap.mid", [(0.0, 0.5, 60), (10.0, 0.5, 62)])
    cache = tmp_path / "cache"
    first = prepare(tmp_path / "data", workers=1, cache_dir=cache, progress=False, kind="grid")
    assert first["files"][0]["positions"] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 4]
    second = prepare(tmp_path / "data", workers=1, cache_dir=cache, progress=False, kind="grid")
    assert second["cached_files"] == 1 and second["files"] == first["files"]
    # an entry written before positions were recorded is parsed again, not read without them
    entry = next(cache.rglob("*.json"))
    stored = json.loads(entry.read_text())
    del stored["positions"]
    entry.write_text(json.dumps(stored))
    third = prepare(tmp_path / "data", workers=1, cache_dir=cache, progress=False, kind="grid")
    assert third["cached_files"] == 0 and third["files"] == first["files"]


def test_windows_carry_the_positions_of_their_tokens() -> None:
    files = [TokenFile("a", ["C4", HOLD, REST, "D4", "E4"], [0, 1, 2, 6, 7]),
             TokenFile("b", ["C4", "D4", "E4", "F4"])]  # an old corpus: counted from a downbeat
    windows = sequences.make_windows(files, ["C4", "D4", "E4", "F4", HOLD, REST], 2)
    assert windows.positions.tolist() == [0, 1, 2, 6, 7, 0, 1, 2, 3]
    assert windows.input_positions().tolist() == [[0, 1], [1, 2], [2, 6], [0, 1], [1, 2]]
    moved = sequences.augment(files[:1], transpose=True)
    assert all(copy.positions == [0, 1, 2, 6, 7] for copy in moved)


def test_a_loop_played_again_starts_where_it_began() -> None:
    loop = TokenFile("loop", ["C4", HOLD, HOLD, "D4", HOLD], [2, 3, 4, 5, 6])
    looped = sequences.loop_files([loop], 2)[0]
    # padded to position 2 of the next bar: 7, 0, 1 are rests, then the loop again at 2
    assert looped.tokens == ["C4", HOLD, HOLD, "D4", HOLD, REST, REST, REST, "C4", HOLD, HOLD, "D4", HOLD]
    assert looped.positions == [2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6]


def _loop(name: str) -> TokenFile:
    tokens = ["0.4.7.11", HOLD, HOLD, HOLD, "C4", HOLD, REST, "E4", "9.0.4.7", HOLD, HOLD, HOLD, "A4", HOLD, "G4", HOLD]
    return TokenFile(name, tokens, grid.bar_positions(len(tokens)))


def test_varied_passes_keep_the_bar_and_change_little() -> None:
    rng = random.Random(3)
    played = variation.passes(_loop("x"), 4, rng)
    assert len(played.tokens) == 64 and played.positions == grid.bar_positions(64)
    passes = [played.tokens[k * 16:(k + 1) * 16] for k in range(4)]
    assert passes[0] == _loop("x").tokens  # the first pass is the loop as it is
    changed = [sum(a != b for a, b in zip(passes[0], later)) for later in passes[1:]]
    assert max(changed) <= 6  # small changes: most steps repeat
    for later in passes[1:]:
        for before, after in zip(passes[0], later):
            if before != after and not is_rhythm(before) and not is_rhythm(after):
                # a thinned chord keeps all but one of its pitches
                assert len(token_pitches(after)) == len(token_pitches(before)) - 1
    plain = variation.passes(_loop("x"), 2, rng, varied=False)
    assert plain.tokens == _loop("x").tokens * 2


def test_variation_draws_every_kind_of_change() -> None:
    rng = random.Random(0)
    loop = _loop("x").tokens
    seen = set()
    for _ in range(200):
        varied = variation.vary(loop, rng)
        assert len(varied) == len(loop)
        for index, (before, after) in enumerate(zip(loop, varied)):
            if before == after:
                continue
            if after in (HOLD, REST) and not is_rhythm(before):
                seen.add("drop or shift")
            elif not is_rhythm(after) and before == HOLD:
                seen.add("shifted in")
            elif not is_rhythm(after):
                seen.add("thin")
    assert seen == {"drop or shift", "shifted in", "thin"}


def test_loop_stream_plays_every_file_two_to_k_times_in_a_shuffled_order() -> None:
    files = [_loop(f"f{i}") for i in range(6)]
    streams = variation.loop_stream(files, 4, rounds=2, seed=1)
    assert len(streams) == 2
    for stream in streams:
        assert len(stream.tokens) == len(stream.positions)
        assert 6 * 2 * 16 <= len(stream.tokens) <= 6 * 4 * 16
        assert stream.positions == grid.bar_positions(len(stream.tokens))
    validation = variation.validation_stream(files[:2])
    assert validation[0].tokens == _loop("a").tokens * 4
    windows = sequences.make_windows(streams, sorted(set(streams[0].tokens) | set(streams[1].tokens)), 32, 16)
    assert np.array_equal(windows.positions[:32], np.arange(32) % 8)
