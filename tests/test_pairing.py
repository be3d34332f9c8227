"""Note pairing (lofi_live.midi.pairing): one rule, its re-strike named per source, used by every path."""

from __future__ import annotations

import mido
import pytest

from lofi_live.commands.plot import group_parts
from lofi_live.midi.files import midi_notes
from lofi_live.midi.pairing import Pairing
from lofi_live.recording.journal import Event
from lofi_live.recording.notes import events_to_notes
from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens.midi import _track_notes

TICKS = 480


def _notes(restrike: str) -> list[tuple]:
    """C4 struck at 0, again at 1 while it sounds, released at 2; a note-off with nothing sounding at 3."""
    pairing = Pairing(restrike)
    done = pairing.on((0, 60), 0, "first") + pairing.on((0, 60), 1, "second") + pairing.off((0, 60), 2)
    done += pairing.off((0, 60), 3)
    return sorted((p.start, p.end, p.data) for p in done)


def test_each_restrike_rule():
    assert _notes("end") == [(0, 1, "first"), (1, 2, "second")]  # a performance: two notes
    assert _notes("replace") == [(1, 2, "second")]  # a file as the grid conformance vectors read it
    assert _notes("stack") == [(0, 2, "first"), (1, 2, "second")]  # music21's reading
    with pytest.raises(ValueError):
        Pairing("keep")


def test_notes_still_sounding_end_at_the_close():
    pairing = Pairing()
    pairing.on("a", 1.0, 80)
    assert [(p.key, p.start, p.end, p.data) for p in pairing.close(4.0)] == [("a", 1.0, 4.0, 80)]
    assert list(pairing.close(5.0)) == []


def _restruck_file(tmp_path) -> mido.MidiFile:
    track = mido.MidiTrack([
        mido.MetaMessage("track_name", name="player", time=0),
        mido.Message("note_on", note=60, velocity=70, time=0),
        mido.Message("note_on", note=60, velocity=90, time=TICKS),  # struck again while it sounds
        mido.Message("note_off", note=60, time=TICKS),
    ])
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    midi.tracks.append(track)
    midi.save(tmp_path / "restrike.mid")
    return mido.MidiFile(tmp_path / "restrike.mid")


def test_plot_and_the_grid_tokens_read_a_restruck_note_alike(tmp_path):
    midi = _restruck_file(tmp_path)
    drawn = group_parts(midi_notes(midi))["player"]  # what lofi-live plot draws
    tokenized = grid_tokens.midi_file_notes(midi)  # what the grid tokens are made of
    assert drawn == tokenized == [tokenized[0]] and (tokenized[0].start, tokenized[0].duration) == (1.0, 1.0)
    assert grid_tokens.notes_to_tokens(drawn) == grid_tokens.notes_to_tokens(tokenized) == ["rest", "rest", "C4", "hold"]


def test_the_seed_reading_pairs_as_music21(tmp_path):
    midi = _restruck_file(tmp_path)
    assert _track_notes(midi.tracks[0]) == [(0, 2 * TICKS, 60), (TICKS, 2 * TICKS, 60)]


def test_the_session_keeps_a_players_restrike_as_two_notes():
    events = [Event(0.0, "on", "player", 60, 70), Event(1.0, "on", "player", 60, 90), Event(2.0, "off", "player", 60)]
    notes = events_to_notes(events)["player"]
    assert [(n.start, n.duration, n.velocity) for n in notes] == [(0.0, 1.0, 70), (1.0, 1.0, 90)]
