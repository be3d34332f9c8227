"""Small real MIDI files for the training tests, written with mido (no fixtures from elsewhere)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import mido

TICKS = 480


def write_onsets(path: Path, onsets: Sequence[Sequence[int]], program: int | None = 0) -> Path:
    """One onset (a note or a chord of MIDI pitches) every half beat, each half a beat long."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    if program is not None:
        track.append(mido.Message("program_change", program=program, time=0))
    events = []
    for step, pitches in enumerate(onsets):
        for pitch in pitches:
            events.append((step * TICKS // 2, 1, pitch))
            events.append(((step + 1) * TICKS // 2, 0, pitch))
    events.sort(key=lambda e: (e[0], e[1]))
    now = 0
    for tick, on, pitch in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=64 if on else 0, time=tick - now))
        now = tick
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)
    return path


def random_song(seed: int, length: int = 60) -> list[list[int]]:
    """A C-major-ish line with some triads: enough variety for a tiny vocabulary."""
    rng = random.Random(seed)
    chords = ([60, 64, 67], [57, 60, 64], [62, 65, 69], [55, 59, 62])
    return [list(rng.choice(chords)) if rng.random() < 0.3 else [rng.choice([60, 62, 64, 65, 67, 69, 71])]
            for _ in range(length)]


def write_clip(path: Path, notes: list[tuple[float, float, int]], bpm: float = 90.0, end_beats: float | None = None,
               channel: int = 0) -> Path:
    """A one-track clip of (start beat, length, pitch); ``end_beats`` puts the end of the track there."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS)
    events = []
    for start, length, pitch in notes:
        events.append((round(start * TICKS), 1, pitch))
        events.append((round((start + length) * TICKS), 0, pitch))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))])
    now = 0
    for tick, on, pitch in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=70 if on else 0, channel=channel, time=tick - now))
        now = tick
    end = now if end_beats is None else round(end_beats * TICKS)
    track.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))
    midi.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)
    return path


def held_chords(path: Path, bpm: float = 90.0) -> Path:
    """Two bars of Am9 and Dm9, each held 3 beats, then a melody note: a LoFi loop."""
    am9, dm9 = (57, 60, 64, 67, 71), (50, 53, 57, 60, 64)
    notes = [(0.0, 3.0, p) for p in am9] + [(3.5, 0.5, 76)] + [(4.0, 3.0, p) for p in dm9] + [(7.0, 0.5, 74)]
    return write_clip(path, notes, bpm, end_beats=8.0)
