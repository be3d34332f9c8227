"""Reading and writing ``.mid`` files with mido: the one place that knows Standard MIDI File details.

Writing: notes timed in beats become a type-1 file with a tempo track and one named track per part
(``player``/``model`` for sessions, one track for offline generation). Reading: every failure
(missing, unreadable, empty, not MIDI, truncated, no tracks) becomes a :class:`LofiError` naming
the file, so commands print one line instead of a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import mido

from lofi_live.errors import LofiError
from lofi_live.files import checked_file
from lofi_live.midi.pairing import Paired, Pairing

#: Ticks per beat of written files: divisible by 2, 3, 4, 8 and 12 so grid steps are exact.
TICKS_PER_BEAT = 480
#: Files above this size are refused: no real performance MIDI file comes near it.
MAX_MIDI_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, order=True)
class NoteEvent:
    """One sounding note, timed in beats from the start of the file."""

    start: float
    duration: float
    pitch: int
    velocity: int = 80
    channel: int = 0


def write_midi(
    path: str | os.PathLike,
    tracks: Sequence[tuple[str, Sequence[NoteEvent]]],
    bpm: float,
    program: int = 0,
    end_beats: float | None = None,
) -> Path:
    """Write a type-1 file: a tempo track, then one named track per ``(name, notes)`` pair.

    ``program`` is the General MIDI program set at the start of each track (0 = piano). ``end_beats``
    ends each note track there (or at its last note-off when later), so a DAW sees a clip of whole bars
    even when it closes with silence. The file is written to a temporary name and renamed, so a crash
    never leaves half a file.
    """
    target = Path(path)
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    meta.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks.append(meta)
    for name, notes in tracks:
        midi.tracks.append(_note_track(name, notes, program, round((end_beats or 0) * TICKS_PER_BEAT)))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    midi.save(temporary)
    os.replace(temporary, target)
    return target


def _note_track(name: str, notes: Sequence[NoteEvent], program: int, end_tick: int = 0) -> mido.MidiTrack:
    """Absolute-time note events -> a delta-time track; note-offs sort before note-ons at a tick."""
    events: list[tuple[int, int, mido.Message]] = []
    channels = sorted({note.channel for note in notes}) or [0]
    for note in notes:
        on = round(note.start * TICKS_PER_BEAT)
        off = max(on + 1, round((note.start + note.duration) * TICKS_PER_BEAT))
        events.append((on, 1, mido.Message("note_on", note=note.pitch, velocity=max(1, note.velocity), channel=note.channel)))
        events.append((off, 0, mido.Message("note_off", note=note.pitch, velocity=0, channel=note.channel)))
    events.sort(key=lambda item: (item[0], item[1], item[2].note))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    for channel in channels:
        track.append(mido.Message("program_change", program=program, channel=channel, time=0))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))
    return track


def check_midi_path(path: str | os.PathLike) -> Path:
    """Refuse a path that is missing, a folder, unreadable, empty, huge or not a MIDI file."""
    file, size = checked_file(path, "a MIDI file", MAX_MIDI_BYTES)
    if size == 0:
        raise LofiError(f"{file}: empty file")
    try:
        with file.open("rb") as handle:
            header = handle.read(4)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    if header not in (b"MThd", b"RIFF"):
        raise LofiError(f"{file}: not a MIDI file (no MThd header)")
    return file


def read_midi(path: str | os.PathLike) -> mido.MidiFile:
    """Open a MIDI file with mido, turning every failure into a one-line :class:`LofiError`."""
    file = check_midi_path(path)
    try:
        midi = mido.MidiFile(file, clip=True)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as error:
        raise LofiError(f"{file}: corrupt or truncated MIDI file ({error or type(error).__name__})") from None
    if not midi.tracks:
        raise LofiError(f"{file}: MIDI file has no tracks")
    if midi.type == 2:
        raise LofiError(f"{file}: type-2 MIDI files (independent patterns) are not supported")
    return midi


def track_notes(track: mido.MidiTrack, ticks_per_beat: int, restrike: str = "replace",
                skip_channel: int | None = None) -> list[NoteEvent]:
    """The notes of one track timed in beats, paired by :class:`lofi_live.midi.pairing.Pairing` (a file's
    re-strike rule is ``replace``); a note never released ends at the end of its track. ``skip_channel``:
    a channel left out (the drums, for grid tokens)."""
    pairing = Pairing(restrike)
    paired: list[Paired] = []
    tick = 0
    for message in track:
        tick += message.time
        if message.type not in ("note_on", "note_off") or message.channel == skip_channel:
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            paired += pairing.on(key, tick, message.velocity)
        else:
            paired += pairing.off(key, tick)
    paired += pairing.close(tick)
    return [NoteEvent(p.start / ticks_per_beat, (p.end - p.start) / ticks_per_beat, p.key[1], p.data, p.key[0])
            for p in paired]


def midi_notes(midi: mido.MidiFile) -> list[tuple[str, NoteEvent]]:
    """All notes of a file as ``(track name, NoteEvent)`` timed in beats, in start order (:func:`track_notes`)."""
    found: list[tuple[str, NoteEvent]] = []
    for index, track in enumerate(midi.tracks):
        name = next((m.name for m in track if m.type == "track_name"), f"track {index}")
        found += [(name, note) for note in track_notes(track, midi.ticks_per_beat)]
    found.sort(key=lambda item: item[1])
    return found


def first_tempo_bpm(midi: mido.MidiFile, default: float = 120.0) -> float:
    """The first set_tempo of the file in BPM, or ``default`` when it has none."""
    for track in midi.tracks:
        for message in track:
            if message.type == "set_tempo":
                return float(mido.tempo2bpm(message.tempo))
    return default
