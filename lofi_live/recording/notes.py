"""A session's events as notes and as a ``.mid``: the one reduction the journal and the live recording share.

Note-ons are paired with note-offs by :class:`lofi_live.midi.pairing.Pairing` under the ``end`` re-strike rule
(a key struck again ends the sounding note there: a performance's two notes), per ``(part, channel, pitch)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import mido

from lofi_live.midi.files import TICKS_PER_BEAT, NoteEvent, write_midi
from lofi_live.midi.pairing import Pairing
from lofi_live.recording.journal import OUTAGE_KINDS, PARTS, TEMPO_EPSILON, Event, SessionData


def events_to_notes(events: Iterable[Event], end_beat: float | None = None) -> dict[str, list[NoteEvent]]:
    """Pair note-ons with note-offs per ``(part, channel, pitch)``; the one rule for journal and ``.mid``.

    * a note-on while the same note still sounds ends the sounding one there and starts a new one (``end``);
    * a note-off with nothing sounding is ignored; a note-off before its note-on's beat gives 0 length;
    * notes still sounding at the end end at ``end_beat`` (default: the ``end`` record, else the
      last event's beat), never before their start.

    Returns ``{part: [NoteEvent, ...]}`` sorted by start, with ``player`` and ``model`` always present.
    """
    events = list(events)
    if end_beat is None:
        ends = [event.beat for event in events if event.kind == "end"]
        end_beat = ends[-1] if ends else max((event.beat for event in events), default=0.0)
    notes: dict[str, list[NoteEvent]] = {part: [] for part in PARTS}
    pairing = Pairing("end")
    paired = []
    for event in events:
        key = (event.part, event.channel, event.pitch)
        if event.kind == "on" and event.velocity > 0:
            paired += pairing.on(key, event.beat, event.velocity)
        elif event.kind in ("on", "off"):
            paired += pairing.off(key, event.beat)
    for (part, channel, pitch), start, end, velocity in [*paired, *pairing.close(end_beat)]:
        notes.setdefault(part, []).append(NoteEvent(start, max(0.0, end - start), pitch, velocity, channel))
    for part_notes in notes.values():
        part_notes.sort()
    return notes


def tempo_map(data: SessionData) -> tuple[float, list[tuple[float, float]]]:
    """``(bpm at beat 0, [(beat, bpm), ...] later changes)`` from the header and ``tempo`` records."""
    start = data.bpm
    changes: list[tuple[float, float]] = []
    for event in sorted((e for e in data.events if e.kind == "tempo"), key=lambda e: e.beat):
        if event.beat <= 0:
            start = event.bpm
            continue
        current = changes[-1][1] if changes else start
        if abs(event.bpm - current) >= TEMPO_EPSILON:
            changes.append((event.beat, event.bpm))
    return start, changes


def write_session_midi(path: str | os.PathLike, data: SessionData, end_beat: float | None = None) -> Path:
    """Write the type-1 ``.mid`` of a session: tempo track, then ``player``, ``model`` (and any other part).

    Notes before beat 0 (a count-in) are clipped to start at 0. Tempo changes recorded with
    :meth:`Session.set_tempo` after beat 0 are added to the tempo track.
    """
    notes = events_to_notes(data.events, end_beat)
    clipped: list[tuple[str, list[NoteEvent]]] = []
    for part, part_notes in notes.items():
        kept = []
        for note in part_notes:
            if note.start < 0:
                end = note.start + note.duration
                note = NoteEvent(0.0, max(0.0, end), note.pitch, note.velocity, note.channel)
            kept.append(note)
        clipped.append((part, kept))
    bpm, changes = tempo_map(data)
    target = write_midi(path, clipped, bpm)
    markers = [(event.beat, marker_text(event)) for event in outages(data)]
    if changes or markers:
        _add_to_tempo_track(target, changes, markers)
    return target


def outages(data: SessionData) -> list[Event]:
    """The ``gap`` and ``back`` records: when the MIDI system or a port went away, and came back."""
    return sorted((event for event in data.events if event.kind in OUTAGE_KINDS), key=lambda event: event.beat)


def marker_text(event: Event) -> str:
    """A ``gap``/``back`` record as the ``.mid`` marker says it."""
    return f"{event.kind}: {event.text}".rstrip(": ")


def _add_to_tempo_track(target: Path, changes: Sequence[tuple[float, float]], markers: Sequence[tuple[float, str]]) -> None:
    """Insert ``set_tempo`` messages and markers into the tempo track of a file :func:`write_midi` wrote."""
    midi = mido.MidiFile(target)
    meta = midi.tracks[0]
    timed: list[tuple[int, int, mido.MetaMessage]] = []
    tick = 0
    for order, message in enumerate(meta):
        tick += message.time
        if message.type != "end_of_track":
            timed.append((tick, order, message))
    for beat, bpm in changes:
        timed.append((round(beat * TICKS_PER_BEAT), len(timed) + 10**6, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    for beat, text in markers:
        timed.append((max(0, round(beat * TICKS_PER_BEAT)), len(timed) + 10**6, mido.MetaMessage("marker", text=text)))
    timed.sort(key=lambda item: (item[0], item[1]))
    track = mido.MidiTrack()
    now = 0
    for tick, _, message in timed:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks[0] = track
    temporary = target.with_name(target.name + ".tmp")
    midi.save(temporary)
    os.replace(temporary, target)
