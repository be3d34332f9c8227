"""The modes' response policy as a plain state machine: when the model plays, and for how long.

No threads and no output here: the engine thread tells the :class:`Conductor` what the player did
and asks, right after each boundary (or, for a grid model, when a step's token is known), whether
the model plays the next step. The answers it gives are the engine's to act on (cancel a computed
token, start a look-ahead).

Modes
    ``continue`` (call and response): idle until the player plays (listening); once the player has
    been silent ``wait_beats`` beats (no note held, no note-on or note-off), or ``release_ms``
    milliseconds when that is given and shorter, the model responds from the first bar line after
    that (:meth:`lofi_live.live.bars.BarGrid.answer_start`; at once while no bar line is known) for
    ``response_bars`` bars or
    until the player plays again (a played note-on cancels the next model note at once), then waits
    for the player again (idle). With a seed it responds at once.
    ``accompany``: the model plays every grid step while the player plays too, and goes on for
    ``response_bars`` bars after the player's last note (or from the seed), then rests until the
    player plays again.
    A held note keeps the phrase open however long it is held: the player is not silent while a key
    is down (the ``--max-note-beats`` bound is for the engine's own notes).

States (shown in the view and sent on ``state_cc``): ``responding`` while the model plays,
``listening`` while the player plays and the model waits, ``idle`` otherwise.

Replays and panic
    The last response is the run of model tokens since the model last started playing, with the
    window as it was before its first token (its context). ``mutate`` starts a new response of
    ``response_bars`` bars sampled again from that context (a separate token stream for the
    inference thread); ``loop`` repeats its tokens without the model until toggled off or panic.
    Panic: the model is silent until the player plays again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lofi_live.live.bars import BarGrid
from lofi_live.timing.clock import step_beat
from lofi_live.tokens.rules import GRID_BEATS

MODES = ("continue", "accompany")
STATES = ("idle", "listening", "responding")
#: Steps per 4/4 bar.
STEPS_PER_BAR = int(4 / GRID_BEATS)
#: A response keeps at most this many tokens (accompany mode can respond for a long time).
MAX_RESPONSE_TOKENS = 512


@dataclass
class Response:
    """One model response: the window tokens it answered (``context``) and the tokens it played."""

    context: list[str]
    tokens: list[str] = field(default_factory=list)


@dataclass
class Replay:
    """A response played again: ``mutate`` samples anew from ``response.context`` (a stream of its
    own for the inference thread); ``loop`` repeats ``response.tokens`` without the model."""

    kind: str  # "mutate" | "loop"
    response: Response
    stream: int = 0
    pos: int = 0


class Conductor:
    """The state of the modes. ``config`` is the engine's (``response_bars`` may change while playing);
    ``held``: the player's keys down, owned by :class:`lofi_live.live.player.PlayerState` (read here,
    never changed). Engine thread only."""

    def __init__(self, config: Any, held: Mapping[tuple[int, int], float] | None = None):
        if config.mode not in MODES:
            raise ValueError(f"unknown mode {config.mode!r}")
        self.config = config
        self.mode = config.mode
        self.state = "idle"
        self.response_end = -1
        self.player_last_beat: float | None = None
        self.held: Mapping[tuple[int, int], float] = {} if held is None else held
        self.seeded = False
        self.last_response: Response | None = None
        self.response_open = False  # the next model token continues self.last_response
        self.replay: Replay | None = None
        self.streams = 0
        self.hushed = False  # after panic: the model is silent until the player plays again
        self.bars = BarGrid()  # where the bar line is (the core gives the clock's)
        self.answer_from = 0  # continue mode: the step the answer starts at (a bar line)

    def response_steps(self) -> int:
        return int(round(self.config.response_bars * STEPS_PER_BAR))

    def seed(self) -> None:
        """The window was primed: the model responds at once."""
        self.seeded = True
        self.state = "responding"
        self.response_end = self.response_steps()

    # -- the player ---------------------------------------------------------------------------

    def player_on(self, beat: float) -> bool:
        """A played note-on (its key is held already); True when the token computed for the model must
        be dropped (continue mode: the player came back). A loop, or a mutate in accompany mode, plays on."""
        self.player_last_beat = beat
        self.hushed = False
        if self.replay is not None and (self.replay.kind == "loop" or self.mode == "accompany"):
            return False
        if self.mode == "continue":
            cancel = self.state == "responding"
            self.replay, self.response_open, self.state = None, False, "listening"
            return cancel
        if self.seeded:
            self.response_end = -1
        if self.state != "responding":
            self.state = "listening"
        return False

    def player_off(self, beat: float) -> None:
        """A key of the player ended (its key is no longer held)."""
        self.player_last_beat = max(beat, self.player_last_beat or beat)

    def reset_player(self) -> None:
        """MIDI Start: beats count from 0 again."""
        self.player_last_beat = None

    def phrase_end_beats(self, bpm: float) -> float:
        """Silence that ends the player's phrase: ``wait_beats``, or ``release_ms`` at the current
        tempo when that is shorter (a release time, as AI Duet has, stays the same at any tempo)."""
        if not self.config.release_ms:
            return self.config.wait_beats
        return min(self.config.wait_beats, self.config.release_ms / 1000.0 * bpm / 60.0)

    def player_silent(self, beat: float, bpm: float) -> bool:
        if self.player_last_beat is None or self.held:
            return False
        return beat - self.player_last_beat >= self.phrase_end_beats(bpm)

    # -- the model ----------------------------------------------------------------------------

    def should_play(self, step: int, bpm: float, has_context: bool) -> bool:
        """Whether the model plays at ``step`` (updates the state)."""
        if self.replay is not None:
            if self.replay.kind == "loop" or step < self.response_end:
                self.state = "responding"
                return True
            self.replay, self.response_open = None, False  # the mutate is over
            if self.mode == "continue":
                self.state = "idle"
                return False
        if self.hushed or not has_context:
            return False
        beat = step_beat(step)
        if self.mode == "continue":
            if self.state == "responding":
                if step >= self.response_end:
                    self.state = "idle"
                    return False
                return step >= self.answer_from
            if self.state == "listening" and self.player_silent(beat, bpm):
                # the answer starts on the first bar line at or after the wait's end (lofi_live.live.bars)
                self.state = "responding"
                self.answer_from = self.bars.answer_start(step)
                self.response_end = self.answer_from + self.response_steps()
                return step >= self.answer_from
            return False
        # accompany
        if self.player_last_beat is not None and (
            self.held or beat - self.player_last_beat <= self.config.response_bars * 4
        ):
            self.state = "responding"
            return True
        if self.seeded and self.response_end > step:
            self.state = "responding"
            return True
        self.state = "listening" if self.held else "idle"
        return False

    def still_plays(self) -> bool:
        """At the boundary: the plan made a step ago still holds (the player did not come back)."""
        return self.mode == "accompany" or self.state == "responding"

    def played(self, token: str, context: Callable[[], list[str]]) -> None:
        """The model played ``token`` (``context()``: the window before it): remembered for mutate and loop."""
        replay = self.replay
        if replay is not None and replay.kind == "loop":
            replay.pos += 1
            return
        if not self.response_open or self.last_response is None:
            self.last_response = Response(context())
            self.response_open = True
        if len(self.last_response.tokens) < MAX_RESPONSE_TOKENS:
            self.last_response.tokens.append(token)

    def rested(self) -> None:
        """A boundary without a model token: a response that is over is closed."""
        if self.state != "responding":
            self.response_open = False

    # -- controls -----------------------------------------------------------------------------

    def set_mode(self, mode: str, next_step: int) -> None:
        self.mode = mode
        if mode == "continue" and self.state == "responding":
            self.response_end = next_step + self.response_steps()

    def panic(self) -> None:
        """Silence: the model waits for the player (whose keys were released first)."""
        self.replay, self.response_open, self.hushed = None, False, True
        self.state, self.response_end, self.player_last_beat = "idle", -1, None

    def mutate(self, next_step: int) -> Replay | None:
        """A new response from the last one's context, from ``next_step`` on; None when there is none."""
        last = self.last_response
        if last is None or not last.context:
            return None
        self.streams += 1
        response = Response(list(last.context))
        self.last_response, self.response_open = response, True
        self.replay = Replay("mutate", response, stream=self.streams)
        self.state = "responding"
        self.response_end = next_step + self.response_steps()
        return self.replay

    def toggle_loop(self) -> bool | None:
        """Loop on (True) or off (False); None when there is nothing to loop."""
        if self.replay is not None and self.replay.kind == "loop":
            self.replay, self.response_open, self.state = None, False, "idle"
            return False
        last = self.last_response
        if last is None or not last.tokens:
            return None
        self.replay = Replay("loop", Response(list(last.context), list(last.tokens)))
        self.response_open, self.state = False, "responding"
        return True
