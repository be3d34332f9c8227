"""The grid tokenization (lofi_live/tokens/grid.py): each rule, the shared conformance vectors, and the
round trip grid tokens -> ``.mid`` -> grid tokens.

The files here are real Standard MIDI Files written with mido (or :func:`lofi_live.midi.files.write_midi`) and
read back from disk, never notes passed around in memory only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofi_live.tokens import grid as G
from lofi_live.tokens import rules as T
from lofi_live.midi.files import write_midi

TICKS = 480
CONFORMANCE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "grid-conformance"

#: (start beat, length in beats, MIDI pitch, channel 0-based); a note-off at start + length
Note = tuple[float, float, int, int]


def write_tracks(path: Path, tracks: Sequence[Sequence[Note]], names: Sequence[str] = ()) -> Path:
    """A type-1 file, one track per list of notes, note-offs before note-ons at the same tick."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    for index, notes in enumerate(tracks):
        events = []
        for start, length, pitch, channel in notes:
            events.append((round(start * TICKS), 1, mido.Message("note_on", note=pitch, velocity=90, channel=channel)))
            events.append((round((start + length) * TICKS), 0, mido.Message("note_off", note=pitch, channel=channel)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        if index < len(names):
            track.append(mido.MetaMessage("track_name", name=names[index]))
        now = 0
        for tick, _, message in events:
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)
    return path


def tokens_of(tmp_path: Path, *tracks: Sequence[Note]) -> list[str]:
    return G.file_tokens(write_tracks(tmp_path / "t.mid", tracks))


# --------------------------------------------------------------------------------------------
# the rules, one by one


@pytest.mark.parametrize("beats, step", [
    (0.0, 0), (0.24, 0), (0.25, 1), (0.26, 1), (0.5, 1), (0.74, 1), (0.75, 2), (1.2499, 2), (1.25, 3), (10.0, 20),
])
def test_onset_goes_to_the_nearest_step_and_a_tie_goes_late(beats, step):
    assert G.onset_step(beats) == step


def test_onset_rounding_in_a_file(tmp_path):
    # D4 at 0.74 beat is just before the middle of steps 1 and 2 (step 1); E4 at 0.75 is on it (late: step 2);
    # G4 at 1.76 beat is 3.52 steps (step 4), so step 3 is silent
    tokens = tokens_of(tmp_path, [(0.0, 0.25, 60, 0), (0.74, 0.01, 62, 0), (0.75, 0.25, 64, 0), (1.76, 0.2, 67, 0)])
    assert tokens == ["C4", "D4", "E4", "rest", "G4"]


def test_drums_on_channel_10_are_left_out(tmp_path):
    piano = [(0.0, 0.5, 60, 0), (1.0, 0.5, 62, 0)]
    drums = [(0.0, 0.25, 36, 9), (0.5, 0.25, 38, 9), (1.5, 0.25, 42, 9)]
    assert tokens_of(tmp_path, piano, drums) == ["C4", "rest", "D4"]
    assert tokens_of(tmp_path, drums) == []


def test_tracks_and_channels_are_merged(tmp_path):
    bass = [(0.0, 2.0, 36, 1)]
    keys = [(0.0, 1.0, 64, 0), (0.0, 1.0, 67, 0), (1.0, 0.5, 72, 2)]
    # step 0: C2 + E4 + G4 from two tracks and two channels -> one chord; step 2: C5 over the held bass
    assert tokens_of(tmp_path, bass, keys) == ["0.4.7", "hold", "C5", "hold"]


def test_hold_probe_is_a_quarter_step_into_the_step(tmp_path):
    later = [(2.0, 0.5, 65, 0)]  # keeps step 1 from being a trailing rest
    # C4 from beat 0: ending after 0.625 (step 1 + 0.125 beat) holds step 1, ending at or before it does not
    assert tokens_of(tmp_path, [(0.0, 0.63, 60, 0), *later]) == ["C4", "hold", "rest", "rest", "F4"]
    assert tokens_of(tmp_path, [(0.0, 0.625, 60, 0), *later]) == ["C4", "rest", "rest", "rest", "F4"]
    assert tokens_of(tmp_path, [(0.0, 0.6, 60, 0), *later]) == ["C4", "rest", "rest", "rest", "F4"]


def test_only_notes_from_an_earlier_step_hold(tmp_path):
    # D4 rounds onto step 1 (starts at 0.3) and lasts long: its own step is an onset, the next ones hold
    assert tokens_of(tmp_path, [(0.0, 0.3, 60, 0), (0.3, 1.0, 62, 0)]) == ["C4", "D4", "hold"]


def test_at_most_eight_rests_in_a_row(tmp_path):
    tokens = tokens_of(tmp_path, [(0.0, 0.5, 60, 0), (10.0, 0.5, 62, 0)])  # 19 silent steps between
    assert tokens == ["C4"] + ["rest"] * G.MAX_RESTS + ["D4"]
    assert G.MAX_RESTS == 8
    exactly = tokens_of(tmp_path, [(0.0, 0.5, 60, 0), (4.5, 0.5, 62, 0)])  # 8 silent steps: all kept
    assert exactly == ["C4"] + ["rest"] * 8 + ["D4"]


def test_trailing_rests_are_dropped(tmp_path):
    path = write_tracks(tmp_path / "t.mid", [[(0.0, 1.0, 60, 0)]])
    midi = mido.MidiFile(path)
    midi.tracks[0].append(mido.MetaMessage("text", text="end of a long empty bar", time=8 * TICKS))
    midi.save(path)
    assert G.file_tokens(path) == ["C4", "hold"]


def test_a_sounding_pitch_struck_again_replaces_the_pending_note(tmp_path):
    """As the conformance vectors (pop909/002.mid, bar 24): a note-on for a pitch that still sounds on its
    channel drops the earlier start; the one note left starts at the second strike."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    track = mido.MidiTrack([
        mido.Message("note_on", note=64, velocity=80, time=0),
        mido.Message("note_off", note=64, time=TICKS // 2),
        mido.Message("note_on", note=60, velocity=80, time=0),  # C4 at beat 0.5 ...
        mido.Message("note_on", note=60, velocity=80, time=TICKS),  # ... struck again at 1.5, still sounding
        mido.Message("note_on", note=60, velocity=0, time=TICKS // 2),  # one release at 2.0
        mido.Message("note_off", note=60, time=0),  # a second one finds nothing sounding
    ])
    midi.tracks.append(track)
    midi.save(tmp_path / "restrike.mid")
    assert G.file_tokens(tmp_path / "restrike.mid") == ["E4", "rest", "rest", "C4"]


def test_a_note_never_released_sounds_to_the_end_of_its_track(tmp_path):
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    midi.tracks.append(mido.MidiTrack([
        mido.Message("note_on", note=57, velocity=80, time=0),
        mido.MetaMessage("end_of_track", time=2 * TICKS),
    ]))
    midi.save(tmp_path / "open.mid")
    assert G.file_tokens(tmp_path / "open.mid") == ["A3", "hold", "hold", "hold"]


def test_tracks_glob_selects_by_name(tmp_path):
    path = write_tracks(tmp_path / "t.mid", [[(0.0, 0.5, 72, 0)], [(0.0, 0.5, 48, 0)]], names=["MELODY", "Piano "])
    assert G.file_tokens(path) == ["0"]  # C5 + C3: a chord of one pitch class
    assert G.file_tokens(path, tracks="piano") == ["C3"]
    assert G.file_tokens(path, tracks="MEL*") == ["C5"]
    assert G.file_tokens(path, tracks="bass") == []


def test_step_token():
    assert G.step_token([60], sounding=False) == "C4"
    assert G.step_token([67, 60, 64, 60], sounding=True) == "0.4.7"
    assert G.step_token([], sounding=True) == T.HOLD
    assert G.step_token([], sounding=False) == T.REST


def test_tokens_to_notes_durations():
    notes = G.tokens_to_notes(["0.4.7", "hold", "hold", "E4", "rest", "hold", "G4", "G4"], velocity=70, start_step=4)
    chord = [(n.start, n.duration, n.pitch) for n in notes if n.start == 2.0]
    assert chord == [(2.0, 1.5, 48), (2.0, 1.5, 52), (2.0, 1.5, 55)]
    rest = [(n.start, n.duration, n.pitch) for n in notes if n.start > 2.0]
    # E4 ends at the rest; a hold after a rest sounds nothing; G4 struck twice
    assert rest == [(3.5, 0.5, 64), (5.0, 0.5, 67), (5.5, 0.5, 67)]
    assert all(n.velocity == 70 for n in notes)
    assert G.tokens_to_notes(["hold", "rest"]) == []


def test_hold_and_rest_cannot_be_pitched_tokens():
    for token in (T.HOLD, T.REST):
        assert T.is_rhythm(token) and not T.is_chord(token)
        assert T.token_pitches(token) == [] and T.token_pitch_classes(token) == set()
        with pytest.raises(T.TokenError):
            T.note_to_midi(token)
    assert T.token_pitches("7") == [55, 67]  # one pitch class: two octaves, so it reads back as a chord


# --------------------------------------------------------------------------------------------
# the shared conformance vectors


def _conformance() -> tuple[Path, dict]:
    expected = CONFORMANCE / "expected.json"
    if not expected.is_file():
        pytest.skip(f"grid conformance vectors not found at {expected} (../shared beside the project root)")
    return CONFORMANCE.parent, json.loads(expected.read_text())


def _vector_files() -> list[str]:
    expected = CONFORMANCE / "expected.json"
    return sorted(json.loads(expected.read_text())["files"]) if expected.is_file() else ["(vectors absent)"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _vector_files())
def test_conformance_vectors(name):
    """Kinds (onset / hold / rest) step by step, and at each onset the token of exactly the listed pitches.

    The vectors list the sorted MIDI pitches of an onset step; spelling them is the tokenizer's job, so an
    onset is compared as its token (one pitch: the note; several: the chord of their pitch classes) and as
    its pitch-class set.
    """
    data, vectors = _conformance()
    steps = vectors["files"][name]
    found = G.file_tokens(data / name)
    assert [T.rhythm_class(t) for t in found] == [s if isinstance(s, str) else "onset" for s in steps]
    for index, (token, step) in enumerate(zip(found, steps)):
        if isinstance(step, list):
            assert token == T.onset_token(step), f"step {index}"
            assert T.token_pitch_classes(token) == {p % 12 for p in step}, f"step {index}"
            if len(step) == 1:
                assert T.note_to_midi(token) == step[0], f"step {index}"


def test_conformance_covers_both_folders():
    _, vectors = _conformance()
    assert len(vectors["files"]) == 8
    assert {name.split("/")[0] for name in vectors["files"]} == {"lofi", "pop909"}


# --------------------------------------------------------------------------------------------
# the round trip


#: Note names read back for 12..127 (music21 names of MIDI 3, 4, 10 and 11 do not round-trip); up to 120 here.
onset_tokens = st.one_of(
    st.integers(12, 120).map(T.midi_to_note),
    st.sets(st.integers(0, 11), min_size=1, max_size=6).map(T.chord_token),
)


@st.composite
def grid_sequences(draw) -> list[str]:
    """Valid grid token sequences: an onset first, no hold right after a rest, at most 8 rests in a row,
    no trailing rest."""
    found = [draw(onset_tokens)]
    for _ in range(draw(st.integers(0, 60))):
        rests = 0
        for token in reversed(found):
            if token != T.REST:
                break
            rests += 1
        choices = ["onset"] + (["hold"] if found[-1] != T.REST else []) + (["rest"] if rests < G.MAX_RESTS else [])
        kind = draw(st.sampled_from(choices))
        found.append(draw(onset_tokens) if kind == "onset" else kind)
    while found[-1] == T.REST:
        found.pop()
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=grid_sequences(), bpm=st.sampled_from([60.0, 72.5, 90.0, 140.0]))
def test_grid_tokens_round_trip_through_a_midi_file(tmp_path, tokens, bpm):
    path = write_midi(tmp_path / "round.mid", [("grid", G.tokens_to_notes(tokens))], bpm=bpm)
    assert G.file_tokens(path) == tokens


def test_round_trip_reads_back_with_music21(tmp_path):
    """The written durations are what a score reader sees: a held chord is one long chord, rests are rests."""
    music21 = pytest.importorskip("music21")
    tokens = ["9.0.4", "hold", "hold", "hold", "rest", "E4", "hold", "2.5.9", "rest", "rest", "C5"]
    path = write_midi(tmp_path / "m.mid", [("grid", G.tokens_to_notes(tokens))], bpm=90)
    score = music21.converter.parse(str(path))
    found = [(float(e.offset), float(e.quarterLength), sorted(p.midi for p in e.pitches))
             for e in score.flatten().notes]
    assert found == [(0.0, 2.0, [57, 60, 64]), (2.5, 1.0, [64]), (3.5, 0.5, [50, 53, 57]), (5.0, 0.5, [72])]
    assert G.file_tokens(path) == tokens
