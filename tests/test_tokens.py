"""Property-based tests (hypothesis) of the shared token rules and of the live window (issue 6, item 7).

Journal and ``.mid`` round trips are covered in tests/test_journal.py and tests/test_session.py; this
module covers the token rules (lofi_live/tokens/rules.py) and the engine's window (the last ``window`` tokens
of the shared timeline).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lofi_live.tokens import rules as T
from lofi_live.live.timeline import Timeline
from model_fixtures import VOCABULARY

pitches = st.integers(0, 127)
pitch_classes = st.integers(0, 11)
pc_sets = st.sets(pitch_classes, min_size=1, max_size=12)
note_tokens = st.integers(12, 127).map(T.midi_to_note)
chord_tokens = pc_sets.map(T.chord_token)
tokens = st.one_of(note_tokens, chord_tokens)

#: The four pitches music21's spelling cannot round-trip (see tokens.note_to_midi).
NO_ROUND_TRIP = {3, 4, 10, 11}


@given(st.integers(12, 127))
def test_note_name_round_trip(midi):
    name = T.midi_to_note(midi)
    assert T.note_to_midi(name) == midi
    assert not T.is_chord(name)
    assert T.parse_token(name) == name


@given(pitches.filter(lambda p: p not in NO_ROUND_TRIP))
def test_note_name_round_trip_whole_range(midi):
    assert T.note_to_midi(T.midi_to_note(midi)) == midi


@given(st.integers(0, 127), st.sampled_from(["#", "-", "##", "--", ""]))
def test_enharmonic_spellings_read_to_the_same_pitch_class(midi, accidental):
    letter = "CDEFGAB"[midi % 7]
    octave = midi // 12
    name = f"{letter}{accidental}{octave}"
    if accidental == "-" and octave == 1 and letter not in "EB":
        return  # music21 writes octave -1 as e.g. C-1: read as octave -1 (documented in note_to_midi)
    try:
        value = T.note_to_midi(name)
    except T.TokenError:
        return  # outside the MIDI range
    shift = accidental.count("#") - accidental.count("-")
    assert value % 12 == ({"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[letter] + shift) % 12


@given(pc_sets, st.randoms(use_true_random=False), st.lists(st.integers(-3, 3), max_size=12), st.integers(0, 3))
def test_chord_token_is_invariant_under_permutation_duplication_and_octaves(pcs, rnd, octaves, repeats):
    reference = T.chord_token(pcs)
    pitches_list = [48 + pc + 12 * (octaves[i] if i < len(octaves) else 0) for i, pc in enumerate(sorted(pcs))]
    doubled = pitches_list + pitches_list[: repeats]
    rnd.shuffle(doubled)
    assert T.chord_token(doubled) == reference
    assert set(T.chord_pitch_classes(reference)) == pcs
    # normal order is a fixed point: the token read back gives itself
    assert T.chord_token(T.chord_pitch_classes(reference)) == reference
    assert T.parse_token(reference) == reference


@given(st.lists(pitches, min_size=1, max_size=8))
def test_onset_token_is_a_note_for_one_pitch_else_a_chord(played):
    token = T.onset_token(played)
    if len(set(played)) == 1:
        assert token == T.midi_to_note(played[0])
    else:
        assert T.is_chord(token) and set(T.chord_pitch_classes(token)) == {p % 12 for p in played}


@given(chord_tokens.filter(lambda t: len(T.chord_pitch_classes(t)) > 1), st.integers(24, 96))
def test_voiced_chord_reads_back_to_the_same_token(token, floor):
    voiced = T.token_pitches(token, floor)
    assert floor <= voiced[0] < floor + 12
    assert voiced == sorted(voiced) and len(set(voiced)) == len(voiced)
    assert T.onset_token(voiced) == token


@given(tokens, st.integers(-24, 24))
def test_transpose_round_trip(token, k):
    moved = T.transpose_token(token, k)
    if moved is None:  # a note pushed out of the MIDI range
        assert not T.is_chord(token)
        assert not 0 <= T.note_to_midi(token) + k <= 127
        return
    if not T.is_chord(token) and T.note_to_midi(token) + k < 12:
        return  # below C0 music21's spelling is ambiguous (note_to_midi's docstring): 12..127 round-trip
    assert T.transpose_token(moved, -k) == token
    assert {(pc + k) % 12 for pc in T.token_pitch_classes(token)} == T.token_pitch_classes(moved)


@given(tokens, st.integers(-12, 12), st.integers(-12, 12))
def test_transpose_composes(token, a, b):
    first = T.transpose_token(token, a)
    if first is None or T.transpose_token(token, a + b) is None:
        return
    if not T.is_chord(token) and min(T.note_to_midi(token) + a, T.note_to_midi(token) + a + b) < 12:
        return  # below C0: see test_transpose_round_trip
    assert T.transpose_token(first, b) == T.transpose_token(token, a + b)


@given(tokens, st.lists(tokens, min_size=1, max_size=30, unique=True))
def test_nearest_token_is_a_vocabulary_member_and_itself_when_known(token, vocabulary):
    nearest = T.nearest_token(token, vocabulary)
    assert nearest in vocabulary
    assert T.nearest_token(token, vocabulary + [token] if token not in vocabulary else vocabulary) == token
    # deterministic, and no other vocabulary token is strictly nearer
    assert T.nearest_token(token, vocabulary) == nearest
    best = T.token_distance(token, nearest)
    assert all(T.token_distance(token, other) >= best for other in vocabulary)


@given(tokens)
def test_nearest_token_in_the_test_vocabulary(token):
    assert T.nearest_token(token, VOCABULARY) in VOCABULARY


@given(st.text(max_size=12))
def test_any_string_is_a_token_or_a_token_error(text):
    """Nothing a user or a file can put in a token string raises anything but TokenError."""
    try:
        T.parse_token(text)
    except T.TokenError:
        return
    # accepted: it must be a real note or chord in ASCII spelling
    assert text.isascii()
    assert T.token_pitches(text)


@pytest.mark.parametrize("text", ["\u00b2", "0.\u0663", "C\u0664", "\u0664", "1.\u00b9", "0.4\n7", "C4\nD4"])
def test_non_ascii_digits_are_not_tokens(text):
    with pytest.raises(T.TokenError):
        T.parse_token(text)


# --------------------------------------------------------------------------------------------
# The live window


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["seed", "player", "model"]), tokens), max_size=600),
       st.integers(1, 64))
def test_window_is_the_last_tokens_of_the_shared_timeline(appended, window):
    timeline = Timeline(window=window, keep=512)
    for step, (part, token) in enumerate(appended):
        timeline.append(step, part, token, step)
    expected = [token for _, token in appended][-window:]
    assert timeline.window_tokens() == expected
    assert timeline.window_indices() == list(range(len(appended)))[-window:]
    assert timeline.count == len(appended)
    assert len(timeline) == min(len(appended), 512)
    for part in ("seed", "player", "model"):
        kept = [token for p, token in appended[-512:] if p == part]
        assert timeline.tokens(part) == kept
