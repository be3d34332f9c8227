"""A played note as the engine takes it: passed through, recorded, tokenized, told to the conductor.

Called on the engine thread for every decoded note (:meth:`lofi_live.live.engine.Engine._handle`). The beat
a note is recorded and tokenized at is the one it was played at (its input stamp); the conductor
counts the silence that ends a phrase on the model's straight grid (``--swing`` un-swung). While the
model holds (the MIDI system or the output gone), a note is recorded and not answered
(:mod:`lofi_live.live.outage`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lofi_live.live import outage
from lofi_live.live.intake import Note

if TYPE_CHECKING:
    from lofi_live.live.engine import Engine


def note(engine: Engine, note: Note) -> None:
    """One played note-on or note-off."""
    if engine.outages.holding:  # nobody hears the model: recorded, not answered
        outage.note_while_holding(engine, note.channel, note.pitch, note.velocity, note.on, engine.clock.beat_at(note.stamp))
        return
    if engine.config.thru:
        engine.voices.thru(note.channel, note.pitch, note.velocity, note.on)
    clock = engine.clock
    if not clock.running:
        engine.odd("stopped", "notes played while the clock is stopped (MIDI Stop, Link session stopped) are not recorded")
        return
    beat = clock.beat_at(note.stamp)  # as played: recorded, and tokenized by the timeline
    grid_beat = engine.swing.straight(beat)  # the conductor counts silence on the model's straight grid
    key = (note.channel, note.pitch)
    conductor, session = engine.conductor, engine.session
    if note.on:
        new_phrase = conductor.player_last_beat is None or conductor.player_silent(grid_beat, clock.bpm)
        engine.dynamics.played(note.velocity, new_phrase)
        if key in conductor.held:
            session.note_off(beat, "player", note.pitch, note.channel)
            engine.steps.note_off(("player", *key), beat)
        if conductor.player_on(key, grid_beat):
            engine.lookahead.cancel()
        session.note_on(beat, "player", note.pitch, note.velocity, note.channel)
        engine.note_counts["player"] += 1
        step = engine.steps.note_on(("player", *key), beat)
        engine.recent.append((step, "player", (note.pitch,)))
    else:
        if not conductor.player_off(key, grid_beat):
            if outage.late_release(engine, note.channel, note.pitch, beat):
                return
            engine.odd("orphan_off", "note-off without a note-on: ignored")
            return
        session.note_off(beat, "player", note.pitch, note.channel)
        engine.steps.note_off(("player", *key), beat)
