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

:class:`Outages` keeps what is gone and what the output is owed, and turns each port event into
commands (:data:`COMMANDS`) that the engine's loop carries out in order; it touches no other part.
Thread: the engine thread's alone (the event was queued with the input).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from lofi_live.midi.port_watch import PortEvent

log = logging.getLogger("lofi_live")

#: How long (seconds) the view keeps showing that something came back.
BACK_NOTICE_SECONDS = 10.0
STOP = "Ctrl-C to stop"
#: What the loop does for an outage, in the order given:
#: ``release_player``: the player's keys down end (their note-offs cannot come);
#: ``stop_clock``: ``--clock midi`` stops, as on a MIDI Stop (the clock came on the lost input);
#: ``hold``: nobody hears the model: it stops here, what sounds is released and owed to the output;
#: ``pay``: the output is back: the note-offs it missed, then All Notes Off;
#: ``resume``: go on from here (what sounded during the gap is not the window's);
#: ``gap`` / ``back``: the marker in the recording.
COMMANDS = ("release_player", "stop_clock", "hold", "pay", "resume", "gap", "back")


@dataclass
class Outages:
    """What is gone now (scope -> the event that said so), and what the returning output is owed."""

    gone: dict[str, PortEvent] = field(default_factory=dict)
    owed: set[tuple[int, int]] = field(default_factory=set)  # (channel, pitch) sounding when the output went
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

    def view(self, now: float) -> dict[str, Any]:
        """The outages' part of the view's snapshot."""
        return {"notice": self.shown(now)}

    def owe(self, sounding: Iterable[tuple[int, int]]) -> None:
        """These notes sound as the output goes: their note-offs are owed to it."""
        self.owed |= set(sounding)

    def pay(self) -> list[tuple[int, int]]:
        """The owed note-offs, once: the output is back."""
        owed, self.owed = sorted(self.owed), set()
        return owed

    def lost(self, event: PortEvent, keys_down: bool, midi_clock_running: bool) -> list[str]:
        """Something went away: the commands, and the line said."""
        if event.scope in self.gone:
            return []
        was_holding = self.holding
        self.gone[event.scope] = event
        commands, done = [], []
        if event.scope in ("system", "input"):
            commands.append("release_player")
            if keys_down:
                done.append("the notes held down ended")
            if midi_clock_running:
                commands.append("stop_clock")
                done.append("the MIDI clock stopped")
        if self.holding and not was_holding:
            commands.append("hold")
            done.insert(0, "holding: the model paused, its notes released")
        elif event.scope == "input":
            done.append("the model plays on")
        comes_back = "the ports reopen by themselves when it returns" if event.scope == "system" \
            else "it reconnects by itself when it returns"
        self._say(f"{event.name} is gone: {', '.join(done + ['a gap marked in the recording'])}; {comes_back}; {STOP}", None)
        return commands + ["gap"]

    def back(self, event: PortEvent, midi_clock_stopped: bool, mode: str, bpm: float) -> list[str]:
        """Something came back: the commands, and the line said."""
        was_holding = self.holding
        if event.scope == "system":
            self.gone.clear()
            for scope, name in event.missing:  # a port of the system not back with it: still gone
                self.gone[scope] = PortEvent("lost", scope, name)
        elif self.gone.pop(event.scope, None) is None:
            return []
        commands = []
        said = "reconnected"
        if event.scope in ("system", "output"):
            said = "the ports are open again under their names (connect them in the DAW if it does not)" \
                if event.scope == "system" else "reconnected, All Notes Off sent"
            if "output" not in self.gone:  # the owed note-offs wait for the output that owes them
                commands.append("pay")
            said += "".join(f"; {name} is not back yet" for _, name in event.missing)
        if was_holding and not self.holding:
            commands.append("resume")
        if self.holding:
            then = "still holding"
        elif midi_clock_stopped:
            then = "waiting for the DAW's Start or Continue"
        elif event.scope == "input":
            then = "play on"
        else:
            then = f"play a phrase to go on ({mode} mode, {bpm:.0f} BPM)"
        self._say(f"{event.name} is back: {said}; {then}", time.perf_counter() + BACK_NOTICE_SECONDS)
        return commands + ["back"]

    def _say(self, text: str, until: float | None) -> None:
        self.notice, self.notice_until = text, until
        log.warning("%s", text)
