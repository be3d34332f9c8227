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
