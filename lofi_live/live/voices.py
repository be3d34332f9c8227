"""Everything the engine sounds: note-ons, held notes, timed note-offs, All Notes Off, the metronome.

No stuck notes
    Every note sent is tracked until its note-off. On stop (also MIDI Stop), Ctrl-C, panic or any
    error, every sounding note gets its note-off and every channel used gets All Notes Off (CC 123).
    A note-on for a pitch still sounding on its channel ends it first. ``--max-note-beats`` bounds
    every note the engine starts (the model's and the metronome's); a note passed through (``--thru``)
    lasts as long as the player holds it.

How long the model's notes last
    Seed models: ``--gate`` of a step (a timed note-off). Grid models: until the model's next onset
    or rest (or the end of its response), so ``hold`` keeps them sounding without a re-strike
    (:meth:`Voices.release` at the boundary that ends them).

Only the engine thread calls these methods (but :meth:`Voices.panic` from the main thread once the
engine thread is gone). Each message sent is also told to the feedback guard, so the engine's own
notes coming back on its input are recognised.
"""

from __future__ import annotations

import heapq
import time
from typing import Any, Callable, Protocol

import mido

from lofi_live.live.intake import FeedbackGuard

#: Metronome pitches (General MIDI percussion: high and low wood block) and length in beats.
METRONOME_ACCENT, METRONOME_BEAT, METRONOME_BEATS = 76, 77, 0.1


class SessionLike(Protocol):
    def note_on(self, beat: float, part: str, pitch: int, velocity: int, channel: int = 0) -> None: ...
    def note_off(self, beat: float, part: str, pitch: int, channel: int = 0) -> None: ...
    def set_tempo(self, beat: float, bpm: float) -> None: ...
    def gap(self, beat: float, what: str) -> None: ...
    def back(self, beat: float, what: str) -> None: ...


class NullSession:
    """A session that records nothing (no ``--record``)."""

    journal_path = None

    def note_on(self, *args: Any, **kwargs: Any) -> None:
        pass

    def note_off(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_tempo(self, *args: Any, **kwargs: Any) -> None:
        pass

    def gap(self, *args: Any, **kwargs: Any) -> None:
        pass

    def back(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        return None


class Sounding:
    """One note the engine started: its part, the beats it began and should end (None: when released)."""

    __slots__ = ("gen", "part", "on_beat", "off_beat")

    def __init__(self, gen: int, part: str, on_beat: float | None, off_beat: float | None):
        self.gen, self.part, self.on_beat, self.off_beat = gen, part, on_beat, off_beat


class Voices:
    """The engine's output. ``send(message)`` is the port; ``clock`` gives beats for the recording."""

    def __init__(self, send: Callable[[mido.Message], Any], guard: FeedbackGuard, clock: Any, max_note_beats: float,
                 channels: set[int], session: SessionLike | None = None):
        self.send_port, self.guard, self.clock = send, guard, clock
        self.max_note_beats = max_note_beats
        self.session: SessionLike = session or NullSession()
        self.sounding: dict[tuple[int, int], Sounding] = {}
        self._timers: list[tuple[float, int, tuple[int, int]]] = []
        self._generation = 0
        self.used_channels = set(channels)
        self._part_channels: dict[str, set[int]] = {}  # the channels each part has sounded on
        #: told of every model note that ends, with the beat recorded (grid models' step tokens)
        self.on_model_off: Callable[[tuple[int, int], float], None] | None = None

    def send(self, message: mido.Message) -> None:
        self.send_port(message)

    def note_on(self, channel: int, pitch: int, velocity: int, part: str, off_time: float | None,
                beat: float | None = None, off_beat: float | None = None) -> None:
        """Start a note; ``off_time`` (perf_counter seconds) ends it, None: held until released.

        ``beat``/``off_beat``: where a model note begins and is meant to end in the recording.
        """
        key = (channel, pitch)
        now = time.perf_counter()
        if key in self.sounding:  # retrigger: end the sounding one first
            self.note_off(key, now, beat)
        self._generation += 1
        gen = self._generation
        if part != "thru":
            bound = now + self.max_note_beats * self.clock.seconds_per_beat
            off_time = bound if off_time is None else min(off_time, bound)
        velocity = max(1, min(127, velocity))
        # stamped before sending: the echo can arrive (and be stamped by the input thread) before this
        # thread runs again, when the machine is busy
        self.guard.note_sent(time.perf_counter(), True, channel, pitch, velocity)
        self.send(mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
        self.sounding[key] = Sounding(gen, part, beat, off_beat)
        self.used_channels.add(channel)
        self._part_channels.setdefault(part, set()).add(channel)
        if off_time is not None:
            heapq.heappush(self._timers, (off_time, gen, key))

    def note_off(self, key: tuple[int, int], now: float, beat: float | None) -> None:
        """End a sounding note (nothing when it is not sounding); ``beat``: when, for the recording."""
        entry = self.sounding.pop(key, None)
        if entry is None:
            return
        self.guard.note_sent(time.perf_counter(), False, key[0], key[1], 0)  # before sending, as for note-ons
        self.send(mido.Message("note_off", channel=key[0], note=key[1], velocity=0))
        if entry.part == "model" and entry.on_beat is not None:
            if beat is None or (entry.off_beat is not None and beat > entry.off_beat):
                beat = entry.off_beat if entry.off_beat is not None else self.clock.beat_at(now)
            if self.clock.running:
                beat = min(beat, max(entry.on_beat, self.clock.beat_at(now)))
            beat = max(beat, entry.on_beat)
            self.session.note_off(beat, "model", key[1], key[0])
            if self.on_model_off is not None:
                self.on_model_off(key, beat)

    def thru(self, channel: int, pitch: int, velocity: int, on: bool) -> None:
        """``--thru``: a played note to the output, for as long as the player holds it."""
        entry = self.sounding.get((channel, pitch))
        if on:
            self.note_on(channel, pitch, velocity, "thru", None)
        elif entry is not None and entry.part == "thru":
            self.note_off((channel, pitch), time.perf_counter(), None)

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def run_timers(self, now: float) -> None:
        """Send the note-offs due by ``now``."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, gen, key = heapq.heappop(timers)
            entry = self.sounding.get(key)
            if entry is not None and entry.gen == gen:
                self.note_off(key, now, entry.off_beat)

    def release(self, part: str | None, beat: float | None = None) -> None:
        """End every note of ``part`` (None: all of them) now; ``beat``: when, for the recording."""
        now = time.perf_counter()
        for key, entry in list(self.sounding.items()):
            if part is None or entry.part == part:
                self.note_off(key, now, beat)

    def stop_parts(self, *parts: str) -> None:
        """The transport stopped: every note of ``parts`` ends, then All Notes Off goes to each channel
        they sounded on, as a sequencer's Stop does: a note-off lost on the way (a loaded JACK server
        drops an event now and then) must not leave a note hanging until the next start. A channel
        where a played note passed through (``--thru``) still sounds is left to its note-offs."""
        for part in parts:
            self.release(part)
        held = {channel for (channel, _), entry in self.sounding.items() if entry.part == "thru"}
        for channel in sorted(set().union(*(self._part_channels.get(part, set()) for part in parts)) - held):
            self.guard.control_sent(time.perf_counter(), channel, 123)
            self.send(mido.Message("control_change", channel=channel, control=123, value=0))

    def sounds(self, part: str) -> bool:
        return any(entry.part == part for entry in self.sounding.values())

    def click(self, when: float, channel: int, accent: bool) -> None:
        """One metronome click at ``when`` (grid time), ``METRONOME_BEATS`` long."""
        pitch = METRONOME_ACCENT if accent else METRONOME_BEAT
        self.note_on(channel, pitch, 100, "metronome", when + METRONOME_BEATS * self.clock.seconds_per_beat)

    def all_notes_off(self) -> None:
        """All Notes Off on every channel used (the engine's own notes and those passed through)."""
        for channel in sorted(self.used_channels):
            self.guard.control_sent(time.perf_counter(), channel, 123)  # its echo must not release the player's keys
            self.send(mido.Message("control_change", channel=channel, control=123, value=0))

    def hush(self, beat: float) -> set[tuple[int, int]]:
        """The output went away: every sounding note ends at ``beat`` (in the recording) and All Notes
        Off goes wherever it still can; the ``(channel, pitch)`` that sounded (their note-offs are owed)."""
        sounded = set(self.sounding)
        self.release(None, beat)
        self.all_notes_off()
        return sounded

    def pay(self, owed: list[tuple[int, int]]) -> None:
        """The output is back: the note-offs it missed, then All Notes Off on every channel used."""
        for channel, pitch in owed:
            self.send(mido.Message("note_off", channel=channel, note=pitch, velocity=0))
        self.all_notes_off()

    def panic(self) -> None:
        """Note-off for everything sounding, then All Notes Off (CC 123) on every channel used."""
        try:
            self.release(None)
        finally:
            self.all_notes_off()
