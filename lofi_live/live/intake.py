"""What the MIDI input thread hands over, and what it means: decoding, the feedback guard, filtering.

The input thread only calls :meth:`Intake.on_message`, which queues the message with its arrival
time (:mod:`lofi_live.midi.input_reader`): nothing else. The engine thread takes messages off the queue
(:meth:`Intake.receive`) and decodes each one (:meth:`Intake.decode`) into a :class:`Note`, a
:class:`Control` (the mapped actions of a control change), an :class:`AllOff` (All Notes Off or All
Sound Off: the keys of a channel are up) or a :class:`Transport` message, or nothing. Another thread
may queue a :class:`Control` itself (:meth:`Intake.put`): it is applied in order with the input.

Only decoding may treat a message as bad input: a field that is missing or out of range makes it
"malformed", logged once and ignored. What the engine then does with a decoded message is its own
logic, outside that guard: a fault there stops the engine (see :mod:`lofi_live.live.engine`).

Robust input. Anything that is not a note, a mapped control change or clock (in ``--clock midi``) is
ignored; each kind of oddity (sysex, pitch bend, aftertouch, program change, unknown or malformed
data, a flood, ...) is logged once, not per message (:class:`Oddities`).

Feedback guard. The engine's own output coming back on its input (loopMIDI, a DAW routing) is
ignored, so the engine never answers itself, and every note a person plays is kept, even one that
doubles the model's (:class:`FeedbackGuard`; :mod:`lofi_live.live.voices` tells it what was sent). An echo
repeats a sent message byte for byte, in the order sent, a few ms later: a played note is an echo
only when it matches one sent within ``echo_ms`` in kind, channel, pitch and velocity.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

log = logging.getLogger("lofi_live.live.engine")

#: A copy of an echo this close to it (seconds) is the same echo delivered twice (:class:`FeedbackGuard`).
COPY_SECONDS = 0.005
#: A flood: more than this many messages waiting on the input queue.
FLOOD_BACKLOG = 2000
#: Transport and clock messages (``--clock midi`` follows them).
TRANSPORT = ("clock", "start", "stop", "continue", "songpos")
#: Ignored message types and the name their oddity is logged under.
IGNORED = {
    "malformed": "malformed MIDI data received",
    "sysex": "sysex received",
    "pitchwheel": "pitch bend received",
    "aftertouch": "aftertouch received",
    "polytouch": "aftertouch received",
    "program_change": "program change received",
    "active_sensing": "active_sensing received",
    "reset": "reset received",
    "tune_request": "tune_request received",
    "quarter_frame": "quarter_frame received",
    "song_select": "song_select received",
}


class Oddities:
    """Counts each kind of odd event and logs the first of each kind only."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, text: str) -> None:
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        if count == 0:
            log.warning("%s (logged once)", text)


class FeedbackGuard:
    """Recognises the engine's own notes coming back on its input within ``window`` seconds.

    What an echo repeats, and a person doubling the model does not:

    * the message itself: note-on or note-off, channel, pitch and velocity, all equal to a sent one
      (a player striking the model's chord tone plays on their own channel, at their own velocity);
    * the order: a loopback delivers messages in the order they were sent, so once a sent message
      has come back, the ones sent before it can no longer come back (they are forgotten);
    * the pair: a note-off is an echo only when its note-on came back as one, so a player releasing
      a key the model also releases keeps the note-off of the note they played;
    * the time: the few ms a loopback takes, at most ``window`` (``--echo-ms``);
    * a copy: python-rtmidi's JACK input, when its client misses cycles, now and then delivers a
      message twice; a copy of an echo within :data:`COPY_SECONDS` of it is that echo again (no hand
      strikes a key twice in 5 ms, let alone at the velocity the model sent).
    """

    def __init__(self, window: float = 0.03):
        self.window = window
        self.sent: deque[tuple[float, bool, int, int, int]] = deque()  # (time, on, channel, pitch, velocity)
        self.recent: deque[tuple[float, tuple[bool, int, int, int]]] = deque(maxlen=64)  # echoes just recognised
        self.looped: set[tuple[int, int]] = set()  # (channel, pitch) whose note-on came back: its note-off will
        self.controls: deque[tuple[float, int, int]] = deque(maxlen=64)  # (time, channel, control) sent
        self.ignored = 0

    def control_sent(self, now: float, channel: int, control: int) -> None:
        """The engine sent All Notes Off (``control`` 123) on ``channel`` at ``now``."""
        self.controls.append((now, channel, control))

    def is_control_echo(self, now: float, channel: int, control: int) -> bool:
        """Whether an All Notes Off / All Sound Off that arrived at ``now`` is the engine's own coming back
        (it must not release the player's keys)."""
        if self.window <= 0:
            return False
        for sent in list(self.controls):
            if now - self.window <= sent[0] <= now + 0.001 and sent[1:] == (channel, control):
                self.controls.remove(sent)
                self.ignored += 1
                return True
        return False

    def note_sent(self, now: float, is_on: bool, channel: int, pitch: int, velocity: int) -> None:
        """The engine sent this note message at ``now``."""
        self.sent.append((now, is_on, channel, pitch, velocity))
        if len(self.sent) > 4096:
            self.sent.popleft()

    def is_echo(self, now: float, is_on: bool, channel: int, pitch: int, velocity: int) -> bool:
        """Whether a note message that arrived at ``now`` is one the engine sent coming back."""
        if self.window <= 0:
            return False
        sent = self.sent
        while sent and sent[0][0] < now - self.window:
            sent.popleft()
        message = (is_on, channel, pitch, velocity)
        if any(abs(now - when) <= COPY_SECONDS and echo == message for when, echo in self.recent):
            self.ignored += 1  # the same echo, delivered twice
            return True
        key = (channel, pitch)
        if not is_on and key not in self.looped:
            return False
        for i, (when, on, sent_channel, sent_pitch, sent_velocity) in enumerate(sent):
            if (on, sent_channel, sent_pitch, sent_velocity) == (is_on, channel, pitch, velocity) and when <= now + 0.001:
                for _ in range(i + 1):  # it and everything sent before it: an echo keeps the order
                    sent.popleft()
                self.recent.append((now, message))
                if is_on:
                    self.looped.add(key)
                else:
                    self.looped.discard(key)
                self.ignored += 1
                return True
        return False


@dataclass(frozen=True)
class Note:
    """A played note-on (``on``) or note-off; a note-on with velocity 0 is a note-off."""

    stamp: float
    channel: int
    pitch: int
    velocity: int
    on: bool


@dataclass(frozen=True)
class Control:
    """The actions (:class:`lofi_live.live.controls.Action`) a mapped control change asks for."""

    stamp: float
    actions: tuple[Any, ...]


@dataclass(frozen=True)
class AllOff:
    """All Notes Off (CC 123) or All Sound Off (CC 120) on the input: every key of ``channel`` is up.

    A DAW sends them on Stop or panic; they are what releases a key whose note-off was lost."""

    stamp: float
    channel: int


@dataclass(frozen=True)
class Transport:
    """A MIDI clock or transport message: ``kind`` is clock, start, stop, continue or songpos.

    ``frame``: a clock tick's arrival by JACK's sample clock (seconds), when the input reader read
    one (:mod:`lofi_live.midi.input_reader`)."""

    stamp: float
    kind: str
    pos: int = 0
    frame: float | None = None


def _number(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not in {low}..{high}")
    return value


class Intake:
    """The input queue and the decoding of what arrives on it (engine thread, but for ``on_message``)."""

    def __init__(self, oddities: Oddities, guard: FeedbackGuard, in_channel: int | None, midi_clock: bool,
                 controls: Any = None):
        self.odd, self.guard = oddities, guard
        self.in_channel, self.midi_clock, self.controls = in_channel, midi_clock, controls
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.messages_in = 0

    def on_message(self, message: Any, stamp: float | None = None) -> None:
        """The input port's callback (MIDI input thread): queue, nothing else. ``stamp`` is when the
        MIDI system received it (``time.perf_counter``), now if not given."""
        self.queue.put((time.perf_counter() if stamp is None else stamp, message))

    def put(self, item: Any) -> None:
        """Queue an already decoded item (a :class:`Control`, a port event) from any thread."""
        self.queue.put((time.perf_counter(), item))

    def receive(self, deadline: float) -> Iterator[tuple[float, Any]]:
        """``(stamp, message)`` of queued input until ``deadline`` (sleeping on the queue when empty)."""
        get = self.queue.get
        handled = 0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            try:
                item = get(timeout=remaining)
            except queue.Empty:
                return
            yield item
            handled += 1
            if handled % 1000 == 0 and self.queue.qsize() > FLOOD_BACKLOG:
                self.odd("flood", f"input flood: {self.queue.qsize()} messages waiting; the grid keeps time")

    def decode(self, message: Any, stamp: float) -> Note | Control | AllOff | Transport | None:
        """What ``message`` means to the engine, or None when it is ignored (each kind logged once)."""
        if isinstance(message, Control):  # Engine.control: actions from elsewhere (the web surface), as a CC's
            for action in message.actions:  # the mapping's toggles flip from the state the engine now has
                if action.kind in ("mode", "key_lock") and hasattr(self.controls, action.kind):
                    setattr(self.controls, action.kind, action.value)
            return message
        self.messages_in += 1
        kind = getattr(message, "type", None)
        try:
            if kind in ("note_on", "note_off"):
                return self._note(message, kind, stamp)
            if kind in TRANSPORT:
                return self._transport(message, kind, stamp)
            if kind == "control_change":
                control = _number(message.control, 0, 127)
                value = _number(message.value, 0, 127)
                _number(message.channel, 0, 15)
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            self.odd("malformed", f"malformed MIDI message ({error}): ignored")
            return None
        if kind == "control_change":
            return self._control(message, control, value, stamp)
        if kind in IGNORED:
            self.odd("aftertouch" if kind == "polytouch" else kind, f"{IGNORED[kind]}: ignored")
        else:
            self.odd("unknown", f"unknown MIDI message {message!r}: ignored")
        return None

    def _note(self, message: Any, kind: str, stamp: float) -> Note | None:
        channel = _number(message.channel, 0, 15)
        pitch = _number(message.note, 0, 127)
        velocity = _number(message.velocity, 0, 127)
        is_on = kind == "note_on" and velocity > 0
        if self.guard.is_echo(stamp, is_on, channel, pitch, velocity):
            self.odd("echo", "the engine's own notes come back on its input (output looped to input): ignoring them")
            return None
        if self.in_channel is not None and channel != self.in_channel:
            self.odd("channel", f"notes on channel {channel + 1} ignored (--in-channel {self.in_channel + 1})")
            return None
        return Note(stamp, channel, pitch, velocity, is_on)

    def _transport(self, message: Any, kind: str, stamp: float) -> Transport | None:
        pos = _number(message.pos, 0, 16383) if kind == "songpos" else 0
        if not self.midi_clock:
            self.odd("clock_ignored", "MIDI clock/transport messages received but the clock is internal "
                                      "(--clock midi follows them): ignored")
            return None
        frame = getattr(message, "time", 0)
        return Transport(stamp, kind, pos, frame if kind == "clock" and isinstance(frame, float) and frame > 0 else None)

    def _control(self, message: Any, control: int, value: int, stamp: float) -> Control | AllOff | None:
        if control in (120, 123):
            if self.guard.is_control_echo(stamp, message.channel, control):
                self.odd("echo", "the engine's own notes come back on its input (output looped to input): ignoring them")
                return None
            if self.in_channel is not None and message.channel != self.in_channel:
                return None
            return AllOff(stamp, message.channel)
        if self.controls is None:
            self.odd("cc", "control change received (no mapping): ignored")
            return None
        actions = tuple(self.controls.handle(message) or ())
        return Control(stamp, actions) if actions else None
