"""Windows, vocabulary, split by file, transposition and oversampling (pure numpy, no TensorFlow)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lofi_live.errors import LofiError
from lofi_live.tokens.rules import chord_token, is_chord, midi_to_note, note_to_midi, token_pitch_classes
from training.fit.sequences import (
    TokenFile, augment, bigram_next, build_vocabulary, loop_short, make_windows, oversample, split_by_file,
    transpose_file,
    unigram_counts,
)

#: MIDI 3, 4, 10 and 11 have names that do not round-trip (see lofi_live.tokens.rules.note_to_midi).
notes = st.integers(12, 127).map(midi_to_note)
chords = st.sets(st.integers(0, 11), min_size=2, max_size=5).map(chord_token)
tokens = st.one_of(notes, chords)


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens, min_size=1, max_size=20), st.integers(-5, 6))
def test_transposition_moves_notes_and_rotates_chords(line: list[str], shift: int) -> None:
    moved = transpose_file(line, shift)
    targets = [note_to_midi(t) + shift for t in line if not is_chord(t)]
    if not all(0 <= m <= 127 and m not in (3, 4, 10, 11) for m in targets):
        assert moved is None
        return
    assert moved is not None and len(moved) == len(line)
    for before, after in zip(line, moved):
        assert token_pitch_classes(after) == {(pc + shift) % 12 for pc in token_pitch_classes(before)}
        if not is_chord(before):
            assert note_to_midi(after) == note_to_midi(before) + shift
    assert transpose_file(moved, -shift) == line


def test_augment_gives_twelve_keys_and_drops_copies_leaving_the_range() -> None:
    files = [TokenFile("a", ["C4", "0.4.7"]), TokenFile("high", ["C9", "G9"])]
    copies = augment(files, transpose=True)
    names = [f.name for f in copies]
    assert names[0] == "a" and len([n for n in names if n.startswith("a")]) == 12
    high = [f for f in copies if f.name.startswith("high")]
    assert {f.name for f in high} == {"high"} | {f"high@{s:+d}" for s in range(-5, 1) if s}
    assert augment(files, transpose=False) == files


def test_windows_never_cross_files() -> None:
    files = [TokenFile(f"f{i}", [f"C{i}"] * (5 + i)) for i in range(4)]
    vocabulary = build_vocabulary(f.tokens for f in files)
    windows = make_windows(files, vocabulary, window=4)
    assert len(windows) == sum(len(f.tokens) - 4 for f in files)
    inputs, targets = windows.inputs(), windows.targets()
    for row, target in zip(inputs, targets):
        assert len(set(row.tolist()) | {int(target)}) == 1


def test_stride_keeps_every_nth_window_and_the_last_and_sequence_targets_shift_by_one() -> None:
    vocabulary = [f"C{i}" for i in range(10)]
    files = [TokenFile("a", vocabulary[:10]), TokenFile("b", vocabulary[:6])]
    windows = make_windows(files, vocabulary, window=3, stride=2)
    # file a: starts 0, 2, 4, 6 (its last window); file b (offset 10): 0, 2 (its last)
    assert windows.starts.tolist() == [0, 2, 4, 6, 10, 12]
    targets = windows.sequence_targets()
    assert targets.shape == (6, 3)
    assert (targets[:, :-1] == windows.inputs()[:, 1:]).all()
    assert (targets[:, -1] == windows.targets()).all()
    assert targets[3].tolist() == [7, 8, 9] and targets[-1].tolist() == [3, 4, 5]
    with pytest.raises(LofiError):
        make_windows(files, vocabulary, window=3, stride=0)


def test_files_shorter_than_a_window_give_no_windows() -> None:
    windows = make_windows([TokenFile("short", ["C4", "D4"])], ["C4", "D4"], window=2)
    assert len(windows) == 0


def test_split_is_by_file_and_deterministic() -> None:
    files = [TokenFile(f"song{i}.mid", ["C4"] * 10) for i in range(50)]
    train, val = split_by_file(files, 0.2)
    assert {f.name for f in train}.isdisjoint({f.name for f in val})
    assert len(train) + len(val) == 50 and 3 <= len(val) <= 20
    assert {f.name for f in split_by_file(list(reversed(files)), 0.2)[1]} == {f.name for f in val}
    _, val2 = split_by_file(files + [TokenFile("new.mid", ["C4"])], 0.2)
    assert {f.name for f in val} <= {f.name for f in val2}
    glob_train, glob_val = split_by_file(files, val_glob="song1*.mid")
    assert {f.name for f in glob_val} == {"song1.mid"} | {f"song{i}.mid" for i in range(10, 20)}
    with pytest.raises(LofiError, match="matches none"):
        split_by_file(files, val_glob="nothing*")


def test_split_keeps_one_file_each_side() -> None:
    files = [TokenFile("a", ["C4"]), TokenFile("b", ["C4"])]
    train, val = split_by_file(files, 0.01)
    assert len(train) == 1 and len(val) == 1
    assert split_by_file(files, 0.0) == (files, [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["C4", "D4", "E4", "F4", "0.4.7"]), min_size=6, max_size=80), st.integers(1, 30))
def test_oversampling_fills_rare_classes_up_to_the_cap(line: list[str], cap: int) -> None:
    vocabulary = sorted(set(line))
    windows = make_windows([TokenFile("f", line)], vocabulary, window=3)
    if not len(windows):
        return
    before = Counter(windows.targets().tolist())
    after_set = oversample(windows, cap)
    after = Counter(after_set.targets().tolist())
    assert set(after) == set(before)
    for target, count in before.items():
        assert after[target] == max(count, cap)
    original = {tuple(row) for row in windows.inputs().tolist()}
    assert {tuple(row) for row in after_set.inputs().tolist()} == original
    assert after_set.starts[: len(windows)].tolist() == windows.starts.tolist()


def test_min_count_maps_rare_tokens_to_their_nearest() -> None:
    files = [TokenFile("f", ["C4"] * 5 + ["D4"] * 5 + ["C#4"] + ["0.4.7"] * 5 + ["0.4.8"])]
    vocabulary = build_vocabulary([f.tokens for f in files], min_count=2)
    assert vocabulary == ["0.4.7", "C4", "D4"]
    windows = make_windows(files, vocabulary, window=1)
    assert vocabulary[windows.ids[-1]] == "0.4.7"
    assert vocabulary[windows.ids[10]] in ("C4", "D4")


def test_baselines_count_within_files() -> None:
    files = [TokenFile("a", ["C4", "D4", "C4", "D4"]), TokenFile("b", ["E4", "C4"])]
    vocabulary = ["C4", "D4", "E4"]
    assert unigram_counts(files, vocabulary) == [3, 2, 1]
    assert bigram_next(files, vocabulary) == [1, 0, 0]
    assert bigram_next([TokenFile("c", ["C4", "E4", "C4", "D4"])], vocabulary) == [1, -1, 0]


def test_short_loops_repeat_until_they_fill_a_window() -> None:
    files = [TokenFile("loop", ["C4", "E4", "G4"]), TokenFile("long", ["C4"] * 9), TokenFile("none", [])]
    looped = loop_short(files, window=8)
    assert looped[0].tokens == ["C4", "E4", "G4"] * 3 and looped[1:] == files[1:]
    windows = make_windows(looped, ["C4", "E4", "G4"], window=8)
    assert len(windows) == 1 + 1
