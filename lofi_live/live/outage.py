"""What the engine does while the MIDI system or a port is gone, and when it comes back.

:mod:`lofi_live.midi.live_ports` notices (a :class:`~lofi_live.midi.port_watch.PortEvent`); the event is
queued with the input and handled on the engine thread, in order with the notes around it.

Gone (``lost``):

* the MIDI system or the output: nobody hears the model, so the engine **holds**: the computed token
  is dropped, every sounding note is released (its note-off goes wherever it still can, and is
  owed to the output until it returns), and the model plays nothing (its tokens enter neither the
  timeline nor the recording) until the output is back; the clock runs on;
* the MIDI system or the input: the player's keys down can no longer be released, so they end here
  in the recording; ``--clock midi`` stops (as on a MIDI Stop: the clock came on that input);
* notes that still arrive from a port that works (the input while only the output is gone) are
  recorded, not answered;
* the recording gets a ``gap`` line in the journal and a marker in the ``.mid``.

Back: the owed note-offs and All Notes Off go to the returned output first; once nothing is held,
the engine goes on in the mode, at the tempo, and with the window it had, waiting for the player's
next phrase (``--clock midi``: for the DAW's Start or Continue); the recording gets a ``back`` line.
Each change is said in one line, in the log and in the terminal view.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mido

from lofi_live.timing.clock import MidiClock
from lofi_live.midi.port_watch import PortEvent

if TYPE_CHECKING:
    from lofi_live.live.engine import Engine

log = logging.getLogger("lofi_live")

#: How long (seconds) the view keeps showing that something came back.
BACK_NOTICE_SECONDS = 10.0
STOP = "Ctrl-C to stop"


@dataclass
class Outages:
    """What is gone now (scope -> the event that said so), and what the returning output is owed."""

    gone: dict[str, PortEvent] = field(default_factory=dict)
    owed: set[tuple[int, int]] = field(default_factory=set)  # (channel, pitch) sounding when the output went
    keys_down: set[tuple[int, int]] = field(default_factory=set)  # played while holding, not yet released
    notice: str = ""
    notice_until: float | None = None  # None: shown while the outage lasts

    @property
    def holding(self) -> bool:
        """Nobody can hear the model: the MIDI system or the output is gone."""
        return "system" in self.gone or "output" in self.gone

    def shown(self, now: float) -> str:
        """The notice the view shows at ``now``."""
        if self.notice_until is not None and now > self.notice_until:
            return ""
        return self.notice


def handle(engine: Engine, event: PortEvent, now: float) -> None:
    """A port event, on the engine thread."""
    if event.kind == "lost":
        _lost(engine, event, now)
    else:
        _back(engine, event, now)


def _lost(engine: Engine, event: PortEvent, now: float) -> None:
    outages = engine.outages
    if event.scope in outages.gone:
        return
    was_holding = outages.holding
    outages.gone[event.scope] = event
    beat = engine.clock.beat_at(now)
    done = []
    if event.scope in ("system", "input"):
        if _release_player(engine, beat):
            done.append("the notes held down ended")
        clock = engine.clock
        if isinstance(clock, MidiClock) and clock.running:
            clock.handle("stop", now)
            from lofi_live.live.actions import silence

            silence(engine)
            done.append("the MIDI clock stopped")
    if outages.holding and not was_holding:
        _hold(engine, beat)
        done.insert(0, "holding: the model paused, its notes released")
    elif event.scope == "input":
        done.append("the model plays on")
    engine.session.gap(beat, event.name)
    comes_back = "the ports reopen by themselves when it returns" if event.scope == "system" else "it reconnects by itself when it returns"
    _say(engine, f"{event.name} is gone: {', '.join(done + ['a gap marked in the recording'])}; {comes_back}; {STOP}", None)


def _back(engine: Engine, event: PortEvent, now: float) -> None:
    outages = engine.outages
    was_holding = outages.holding
    if event.scope == "system":
        outages.gone.clear()
        for scope, name in event.missing:  # a port of the system not back with it: still gone
            outages.gone[scope] = PortEvent("lost", scope, name)
    elif outages.gone.pop(event.scope, None) is None:
        return
    beat = engine.clock.beat_at(now)
    said = "reconnected"
    if event.scope in ("system", "output"):
        said = "the ports are open again under their names (connect them in the DAW if it does not)" \
            if event.scope == "system" else "reconnected, All Notes Off sent"
        if "output" not in outages.gone:  # the owed note-offs wait for the output that owes them
            _pay(engine)
        if event.missing:
            said += "".join(f"; {name} is not back yet" for _, name in event.missing)
    if was_holding and not outages.holding:
        _resume(engine)
    engine.session.back(beat, event.name)
    if outages.holding:
        then = "still holding"
    elif isinstance(engine.clock, MidiClock) and not engine.clock.running:
        then = "waiting for the DAW's Start or Continue"
    elif event.scope == "input":
        then = "play on"
    else:
        then = f"play a phrase to go on ({engine.conductor.mode} mode, {engine.clock.bpm:.0f} BPM)"
    _say(engine, f"{event.name} is back: {said}; {then}", time.perf_counter() + BACK_NOTICE_SECONDS)


def _say(engine: Engine, text: str, until: float | None) -> None:
    engine.outages.notice, engine.outages.notice_until = text, until
    log.warning("%s", text)


def _release_player(engine: Engine, beat: float) -> bool:
    """The player's keys down end at ``beat``: their note-offs can no longer arrive."""
    conductor = engine.conductor
    keys = list(conductor.held) + sorted(engine.outages.keys_down)
    for channel, pitch in keys:
        engine.session.note_off(beat, "player", pitch, channel)
        engine.steps.note_off(("player", channel, pitch), beat)
    conductor.held.clear()
    engine.outages.keys_down.clear()
    engine.voices.release("thru", beat)
    return bool(keys)


def _hold(engine: Engine, beat: float) -> None:
    """Nobody hears the model: it stops here; what sounds is released (and owed to the output)."""
    engine.lookahead.cancel()
    engine.midi_due = None
    engine.outages.owed |= set(engine.voices.sounding)
    engine.voices.release(None, beat)
    engine.voices.all_notes_off()
    engine.outages.keys_down |= set(engine.conductor.held)  # still down: their note-offs are recorded when they come
    engine.conductor.panic()  # then waits for the player, in the mode it had


def _pay(engine: Engine) -> None:
    """The output is back: the note-offs it missed, then All Notes Off on every channel used."""
    voices = engine.voices
    for channel, pitch in sorted(engine.outages.owed):
        voices.send(mido.Message("note_off", channel=channel, note=pitch, velocity=0))
    engine.outages.owed.clear()
    voices.all_notes_off()


def _resume(engine: Engine) -> None:
    """Go on from here: what sounded during the gap is not the window's; the window is as it was."""
    engine.lookahead.cancel()
    engine.steps.clear()
    engine.model_steps.clear()


def note_while_holding(engine: Engine, channel: int, pitch: int, velocity: int, on: bool, beat: float) -> None:
    """A note from an input that still works while the model holds: recorded, not answered."""
    key = (channel, pitch)
    if on:
        engine.outages.keys_down.add(key)
        engine.session.note_on(beat, "player", pitch, velocity, channel)
    else:
        engine.outages.keys_down.discard(key)
        engine.session.note_off(beat, "player", pitch, channel)


def late_release(engine: Engine, channel: int, pitch: int, beat: float) -> bool:
    """The note-off of a key pressed while holding, arriving after the hold: True when it was one."""
    key = (channel, pitch)
    if key not in engine.outages.keys_down:
        return False
    engine.outages.keys_down.discard(key)
    engine.session.note_off(beat, "player", pitch, channel)
    return True
