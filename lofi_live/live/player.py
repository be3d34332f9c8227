"""The player's side of the engine: the keys held down and the one rule that ends a player's note.

A played note is passed through (``--thru``), recorded at the beat it was played (its input stamp),
tokenized (the step tokens) and told to the conductor, which counts the silence that ends a phrase
on the model's straight grid (``--swing`` un-swung). Every way a player's note can end goes
through :meth:`PlayerState.end`: its note-off, a re-strike of the key, All Notes Off (CC 123) or
All Sound Off (CC 120) on its channel, the panic control, the input going away, or a key taken as
lost. So the recording, the tokens and the conductor never disagree about what is held.

Faults of the MIDI transport that are taken care of here:

* a note-on the transport delivers twice (python-rtmidi's JACK input, a busy machine): the same
  key struck again within :data:`DUPLICATE_SECONDS` of its note-on is that note-on again, not a
  re-strike (no hand strikes a key twice in 5 ms);
* a lost note-off: a DAW's Stop or panic sends All Notes Off / All Sound Off, which release the
  keys of that channel; and a key held while no input at all arrives for ``--lost-key-bars`` bars
  is taken as lost: said once, released, so the phrase ends and the model answers again.

While the model holds (the MIDI system or the output gone, :mod:`lofi_live.live.outage`), notes are
recorded and not answered; a key down then is "unanswered" until its note-off comes.

Thread: the engine thread's alone. It touches the recording (``session``), the step tokens
(``steps``), the conductor (told of note-ons and note-offs), the dynamics, the view's roll
(``recent``) and, for ``--thru``, the voices.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from lofi_live.live.conductor import Conductor
from lofi_live.live.voices import Voices
from lofi_live.timing.groove import Dynamics

#: A note-on of a key within this many seconds of its note-on is the same note-on delivered twice.
DUPLICATE_SECONDS = 0.005
#: ``--lost-key-bars``: a key held this many 4/4 bars with no input at all is taken as lost.
LOST_KEY_BARS = 8.0

Key = tuple[int, int]  # (channel, pitch)


class PlayerState:
    """The player's keys: held (answered), unanswered (pressed while the model holds), and when the
    input last said anything."""

    def __init__(self, held: dict[Key, float], conductor: Conductor, steps: Any, voices: Voices, dynamics: Dynamics,
                 recent: deque, odd: Callable[[str, str], None], thru: bool = False,
                 lost_key_bars: float = LOST_KEY_BARS):
        self.conductor, self.steps, self.voices, self.dynamics = conductor, steps, voices, dynamics
        self.recent, self.odd, self.thru = recent, odd, thru
        self.lost_key_beats = lost_key_bars * 4
        self.held = held  # the keys down -> the (straight) beat pressed; the conductor reads it
        self.unanswered: set[Key] = set()  # pressed while the model held, not yet released
        self._pressed: dict[Key, float] = {}  # key -> the stamp of its note-on
        self.last_input: float | None = None  # the beat the input last said anything
        self.notes = 0  # note-ons played (and answered or not) since the start

    @property
    def session(self) -> Any:
        return self.voices.session

    # -- what the input says ----------------------------------------------------------------

    def heard(self, beat: float) -> None:
        """The input said something at ``beat`` (a note, a control): a held key is not lost."""
        self.last_input = beat if self.last_input is None else max(beat, self.last_input)

    def duplicate(self, key: Key, stamp: float) -> bool:
        """Whether a note-on of ``key`` at ``stamp`` is its last note-on delivered twice (then ignored)."""
        pressed = self._pressed.get(key)
        if pressed is None or stamp - pressed > DUPLICATE_SECONDS:
            return False
        self.odd("duplicate", "a note-on delivered twice by the MIDI input (within 5 ms): taken as one")
        return True

    def press(self, key: Key, velocity: int, stamp: float, beat: float, straight: float, bpm: float) -> bool:
        """A played note-on at ``beat`` (``straight``: un-swung); True when the model's computed token
        must be dropped (continue mode: the player came back)."""
        conductor = self.conductor
        if self.thru:
            self.voices.thru(key[0], key[1], velocity, True)
        new_phrase = conductor.player_last_beat is None or conductor.player_silent(straight, bpm)
        self.dynamics.played(velocity, new_phrase)
        if key in self.held:  # a re-strike ends the sounding note here
            self.end(key, beat, straight)
        self.held[key] = straight
        self._pressed[key] = stamp
        cancel = conductor.player_on(straight)
        self.session.note_on(beat, "player", key[1], velocity, key[0])
        self.notes += 1
        step = self.steps.note_on(("player", *key), beat)
        self.recent.append((step, "player", (key[1],)))
        return cancel

    def release(self, key: Key, beat: float, straight: float) -> None:
        """A played note-off at ``beat``."""
        if self.thru:
            self.voices.thru(key[0], key[1], 0, False)
        if key in self.held:
            self.end(key, beat, straight)
        elif key in self.unanswered:  # pressed while the model held: only recorded
            self.unanswered.discard(key)
            self.session.note_off(beat, "player", key[1], key[0])
        else:
            self.odd("orphan_off", "note-off without a note-on: ignored")

    def end(self, key: Key, beat: float, straight: float) -> None:
        """The one rule that ends a held key: recorded, tokenized, told to the conductor."""
        self.held.pop(key, None)
        self._pressed.pop(key, None)
        self.session.note_off(beat, "player", key[1], key[0])
        self.steps.note_off(("player", *key), beat)
        self.conductor.player_off(straight)

    def all_off(self, channel: int, beat: float, straight: float) -> int:
        """All Notes Off / All Sound Off on ``channel``: its keys are up. The number released."""
        keys = sorted(key for key in [*self.held, *self.unanswered] if key[0] == channel)
        for key in keys:
            self.release(key, beat, straight)
        if keys:
            self.odd("all_off", f"All Notes Off / All Sound Off received on channel {channel + 1}: "
                                "its keys held down are released")
        return len(keys)

    def end_all(self, beat: float, straight: float) -> bool:
        """Every key down ends at ``beat`` (panic, the input gone): their note-offs will not come."""
        keys = sorted(self.held) + sorted(self.unanswered)
        for key in keys:
            self.release(key, beat, straight)
        if self.thru:
            self.voices.release("thru", beat)
        return bool(keys)

    def lost_keys(self, beat: float, straight: float) -> bool:
        """Keys held with no input at all for ``--lost-key-bars`` bars up to ``beat`` are taken as lost
        (their note-offs never came): said once, released. True when some were."""
        if not self.held or self.last_input is None or beat - self.last_input < self.lost_key_beats:
            return False
        bars = self.lost_key_beats / 4
        self.odd("lost_key", f"a key held {bars:g} bars with no other input is taken as lost (its note-off "
                             "never came): released, the model answers again (--lost-key-bars)")
        for key in sorted(self.held):
            self.release(key, beat, straight)
        return True

    # -- while the model holds --------------------------------------------------------------

    def hold(self) -> None:
        """The model holds: the keys down wait for their note-offs unanswered (recorded when they come)."""
        self.unanswered |= set(self.held)
        self.held.clear()
        self._pressed.clear()

    def press_unanswered(self, key: Key, velocity: int, beat: float) -> None:
        """A note-on while the model holds: recorded, not answered."""
        self.unanswered.add(key)
        self.session.note_on(beat, "player", key[1], velocity, key[0])

    def view(self) -> dict[str, Any]:
        """The player's part of the view's snapshot."""
        return {"notes_player": self.notes}

    def restart(self) -> None:
        """MIDI Start: beats count from 0 again; the keys down are forgotten."""
        self.held.clear()
        self._pressed.clear()
        self.last_input = None
