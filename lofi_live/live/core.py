"""What the engine thread does with the engine's parts, one event at a time: no threads here.

:class:`EngineCore` makes the parts and wires them (``docs/LIVE_ENGINE.md`` tells the whole story):

* :class:`~lofi_live.live.intake.Intake`: what the MIDI input thread hands over, decoded; the feedback guard;
* :class:`~lofi_live.live.scheduler.Scheduler`: the clock, the next step, swing and humanize offsets;
  transport, Link and tempo turned into cues;
* :class:`~lofi_live.live.player.PlayerState`: the player's keys and the one rule that ends a player's note;
* :class:`~lofi_live.live.responder.Responder`: the models, the timeline, the look-ahead, the key lock;
* :class:`~lofi_live.live.conductor.Conductor`: the modes' policy: when the model plays and for how long;
* :class:`~lofi_live.live.timeline.GridSteps` / ``OnsetSteps``: what sounded -> one token per step;
* :class:`~lofi_live.live.voices.Voices`: note-ons, held notes, timed note-offs, All Notes Off, the metronome;
* :class:`~lofi_live.live.outage.Outages`: port events turned into commands while something is gone.

A part talks to another through an object it was given; the core carries out what the scheduler
and the outages ask for, and each part publishes its own share of the view's snapshot. The
thread that runs all this, the loop and the life cycle are :class:`lofi_live.live.engine.Engine`;
tests drive the core on a simulated clock.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Sequence

import mido

from lofi_live.live.bars import BarGrid
from lofi_live.live.conductor import STEPS_PER_BAR, Conductor
from lofi_live.live.config import EngineConfig
from lofi_live.live.intake import AllOff, Control, FeedbackGuard, Intake, Note, Oddities, Transport
from lofi_live.live.outage import Outages
from lofi_live.live.player import PlayerState
from lofi_live.live.responder import Responder
from lofi_live.live.scheduler import Cue, Scheduler, make_clock
from lofi_live.live.timeline import GridSteps, OnsetSteps
from lofi_live.live.view import EngineStatus
from lofi_live.live.voices import SessionLike, Voices
from lofi_live.midi.port_watch import PortEvent
from lofi_live.timing.clock import MidiClock
from lofi_live.timing.groove import Dynamics, Humanize, Swing, swing_fraction

#: Steps the view's piano roll can show.
RECENT_STEPS = 256


class EngineCore:
    """The engine's parts and what happens to them on the engine thread."""


    def __init__(
        self,
        model,
        sampler,
        send: Callable[[mido.Message], Any],
        config: EngineConfig | None = None,
        session: SessionLike | None = None,
        key: str | None = None,
        scale: str | None = None,
        controls: Any = None,
        models: Sequence[Any] = (),
    ):
        self.config = cfg = config or EngineConfig()
        self.clock = make_clock(cfg.clock, cfg.bpm)
        self.odd = Oddities()
        guard = FeedbackGuard(cfg.echo_ms / 1000.0)
        self.intake = Intake(self.odd, guard, cfg.in_channel, cfg.clock == "midi", controls)
        channels = {cfg.out_channel} | ({cfg.metronome} if cfg.metronome is not None else set())
        self.voices = Voices(send, guard, self.clock, cfg.max_note_beats, channels, session)
        self.swing = Swing(cfg.swing)
        humanize = Humanize(cfg.humanize, cfg.seed)
        self.dynamics = Dynamics(cfg.velocity, humanize)
        self.scheduler = Scheduler(self.clock, self.swing, humanize, cfg.offset_ms, self.odd)
        held: dict[tuple[int, int], float] = {}
        self.conductor = Conductor(cfg, held)
        self.responder = Responder(model, sampler, models, key, scale, self.conductor, self.odd, cfg.simulate_slow_ms,
                                   cfg.variation, cfg.follow == "chord")
        self.grid = self.responder.grid
        # where beat 1 of the bar is, for the model's positions and the answer's start (lofi_live.live.bars)
        self.bars = BarGrid.for_clock(cfg.clock, cfg.metronome is not None)
        self.conductor.bars = self.responder.bars = self.bars
        self.steps: GridSteps | OnsetSteps = GridSteps(self.swing) if self.grid else OnsetSteps(self.swing)
        if self.grid:
            self.voices.on_model_off = lambda key, beat: self.steps.note_off(("model", *key), beat)
        self.recent: deque[tuple[int, str, tuple[int, ...]]] = deque(maxlen=RECENT_STEPS)  # the view's roll
        self.player = PlayerState(held, self.conductor, self.steps, self.voices, self.dynamics, self.recent, self.odd,
                                  cfg.thru, cfg.lost_key_bars)
        self.outages = Outages()
        self.state = "idle"  # at the last boundary: idle, listening (the player's turn) or responding
        self._state_sent: str | None = None
        self._published = 0.0
        self.status = EngineStatus()
        self._ended = False  # the engine thread has ended (the view shows it stopped)
        self._publish()

    # ------------------------------------------------------------------------------------------
    # Wiring

    @property
    def session(self) -> SessionLike:
        return self.voices.session

    @session.setter
    def session(self, session: SessionLike) -> None:
        self.voices.session = session

    @property
    def send(self) -> Callable[[mido.Message], Any]:
        """Where every output message goes (the output port)."""
        return self.voices.send_port

    @send.setter
    def send(self, send: Callable[[mido.Message], Any]) -> None:
        self.voices.send_port = send

    @property
    def controls(self) -> Any:
        return self.intake.controls

    @controls.setter
    def controls(self, controls: Any) -> None:
        self.intake.controls = controls

    def _handle(self, message: Any, stamp: float, now: float | None = None) -> None:
        """One queued item that arrived at ``stamp``, acted on at ``now`` (default: ``stamp``).

        A note keeps its arrival stamp (that is when it was played). A control takes effect when it is
        applied: a tempo change anchored at an earlier arrival would move beats that were already sent
        (and read by the view and the journal) under the old tempo."""
        if isinstance(message, PortEvent):
            self._port_event(message, stamp)
            self._publish()
            return
        event = self.intake.decode(message, stamp)
        if event is not message and isinstance(event, (Note, AllOff, Control)) and self.clock.running:
            self.player.heard(self.clock.beat_at(event.stamp))  # the MIDI input said something (not Engine.control)
        if isinstance(event, Note):
            self._note(event)
        elif isinstance(event, AllOff):
            beat = self.clock.beat_at(event.stamp)
            self.player.all_off(event.channel, beat, self.swing.straight(beat))
        elif isinstance(event, Transport):
            self._carry(self.scheduler.transport(event.kind, event.stamp, event.pos, event.frame))
        elif isinstance(event, Control):
            for action in event.actions:
                self.apply(action, event.stamp if now is None else max(now, event.stamp))

    def _note(self, note: Note) -> None:
        """One played note-on or note-off (:mod:`lofi_live.live.player`)."""
        player, key = self.player, (note.channel, note.pitch)
        if note.on and player.duplicate(key, note.stamp):
            return
        beat = self.clock.beat_at(note.stamp)  # as played: recorded, and tokenized by the step tokens
        if self.outages.holding:  # nobody hears the model: recorded, not answered
            if note.on:
                player.press_unanswered(key, note.velocity, beat)
            else:
                player.release(key, beat, self.swing.straight(beat))
            return
        if not self.clock.running:
            if self.config.thru:
                self.voices.thru(note.channel, note.pitch, note.velocity, note.on)
            self.odd("stopped", "notes played while the clock is stopped (MIDI Stop, Link session stopped) are not recorded")
            return
        straight = self.swing.straight(beat)  # the conductor counts silence on the model's straight grid
        if not note.on:
            player.release(key, beat, straight)
            return
        self.bars.first_onset(straight)  # no bar line yet (internal clock, no metronome): this is beat 1
        if player.press(key, note.velocity, note.stamp, beat, straight, self.clock.bpm):
            self.responder.cancel()

    def _carry(self, cues: list[Cue]) -> None:
        """Carry out what the scheduler asked for, in order."""
        for cue in cues:
            if cue.kind == "close":
                self.close_steps(cue.when)
            elif cue.kind == "boundary":
                self.boundary(cue.step, cue.when)
            elif cue.kind == "silence":
                self.voices.stop_parts("model", "metronome")
                self.responder.cancel()
                self.scheduler.silence()
            elif cue.kind == "restart":
                self.steps.clear()
                self.player.restart()
                self.conductor.reset_player()
            elif cue.kind == "jump":
                self.responder.cancel()  # computed for a step that is no longer the next one
                self.plan(cue.step)
            else:
                self.plan(cue.step)

    def _port_event(self, event: PortEvent, now: float) -> None:
        """The MIDI system or a port went away or came back: carry out what the outages ask for."""
        outages, player, voices = self.outages, self.player, self.voices
        beat = self.clock.beat_at(now)
        if event.kind == "lost":
            midi_running = isinstance(self.clock, MidiClock) and self.clock.running
            commands = outages.lost(event, bool(player.held or player.unanswered), midi_running)
        else:
            midi_stopped = isinstance(self.clock, MidiClock) and not self.clock.running
            commands = outages.back(event, midi_stopped, self.conductor.mode, self.clock.bpm)
        for command in commands:
            if command == "release_player":
                player.end_all(beat, self.swing.straight(beat))
            elif command == "stop_clock":
                self._carry(self.scheduler.stop_midi_clock(now))
            elif command == "hold":  # nobody hears the model: it stops here, what sounds is owed to the output
                self.responder.cancel()
                self.scheduler.silence()
                outages.owe(voices.hush(beat))
                player.hold()
                self.conductor.panic()  # then waits for the player, in the mode it had
            elif command == "pay":
                voices.pay(outages.pay())
            elif command == "resume":  # what sounded during the gap is not the window's; the window is as it was
                self.responder.cancel()
                self.steps.clear()
            elif command == "gap":
                self.session.gap(beat, event.name)
            else:
                self.session.back(beat, event.name)

    # ------------------------------------------------------------------------------------------
    # Steps and boundaries

    def close_steps(self, now: float) -> None:
        """Tokens of the steps that closed by ``now`` into the timeline (grid models: then plan)."""
        if not self.clock.running or self.outages.holding:
            return
        for step, part, token in self.steps.close_due(self.clock.beat_at(now)):
            self.responder.append(step, part, token)
            if self.grid and step + 1 >= self.scheduler.next_step:
                self.plan(step + 1)

    def plan(self, step: int) -> None:
        """Start computing the token for ``step`` if the model plays then (not while nobody hears it)."""
        if not self.outages.holding:
            self.responder.plan(step, self.clock.bpm)

    def boundary(self, step: int, when: float) -> None:
        """Grid step ``step`` at time ``when``: send first, then plan the next step."""
        cfg, responder = self.config, self.responder
        index = responder.take(step)
        beat = self.scheduler.boundary(step)
        if index is not None:
            responder.play(step, index, when, beat, self.voices, self.steps, self.dynamics, self.swing, self.recent, cfg)
        else:
            if self.grid:  # the model's notes end with its response
                self.voices.release("model", beat)
            self.conductor.rested()
        tempo = self.scheduler.tempo_to_record(step)
        if tempo is not None:
            self.session.set_tempo(*tempo)
        if cfg.metronome is not None and step % 2 == 0 and not self.outages.holding:
            self.voices.click(when, cfg.metronome, step % STEPS_PER_BAR == 0)
            if index is None:
                responder.emission_errors.append(time.perf_counter() - when)
        responder.switch()
        if self.clock.running:
            self.player.lost_keys(beat, self.swing.straight(beat))
        if not self.grid:
            self.plan(step + 1)
        # what this step is (the conductor's state is already about the next one)
        self.state = "responding" if index is not None else "idle" if self.conductor.state == "idle" else "listening"
        if self.state != self._state_sent:
            self._send_state()
        self._publish()

    def _send_state(self) -> None:
        """Announce idle/listening/responding on the controls' state CC, when one is mapped."""
        self._state_sent = self.state
        make = getattr(self.controls, "state_message", None)
        if make is None:
            return
        message = make(self._state_sent, self.config.out_channel)
        if message is not None:
            self.voices.send(message)

    # ------------------------------------------------------------------------------------------
    # MIDI control (docs/LIVE_ENGINE.md: what each action does)

    def apply(self, action: Any, now: float | None = None) -> None:
        """Apply one control action (``kind`` and ``value``) at ``now`` (default: this moment), on the engine thread."""
        now = time.perf_counter() if now is None else now
        name, value = action.kind, action.value
        conductor, responder, scheduler = self.conductor, self.responder, self.scheduler
        if name == "temperature" and value is not None:
            responder.set_temperature(float(value))
        elif name == "variation" and value is not None:
            responder.set_variation(min(1.0, max(0.0, float(value))))
        elif name == "tempo" and value is not None:
            tempo = scheduler.set_tempo(float(value), now)
            if tempo is not None:
                self.session.set_tempo(*tempo)
        elif name == "swing" and value is not None:  # the steps still to sound move; a played note keeps its step
            self.swing.pct, self.swing.fraction = float(value), swing_fraction(float(value))
        elif name == "mode" and value in ("continue", "accompany"):
            conductor.set_mode(value, scheduler.next_step)
        elif name == "response_bars" and value is not None:
            self.config.response_bars = float(value)
        elif name == "panic":  # silence now; the engine goes on and waits for the player
            responder.cancel()
            beat = self.clock.beat_at(now)
            self.player.end_all(beat, self.swing.straight(beat))
            conductor.panic()
            self.voices.panic()
        elif name == "key_lock":
            responder.keylock.toggle(value)
        elif name == "mutate":
            if conductor.mutate(scheduler.next_step) is None:
                self.odd("mutate_nothing", "mutate: no response to re-generate yet: ignored")
                return
            responder.cancel()
            self.plan(scheduler.next_step)
        elif name == "loop":
            looping = conductor.toggle_loop()
            if looping is None:
                self.odd("loop_nothing", "loop: no response to repeat yet: ignored")
                return
            responder.cancel()
            if looping:
                self.plan(scheduler.next_step)
        elif name == "model_select" and value is not None:
            responder.select(int(value))  # applied at the next boundary
        else:
            self.odd(f"action_{name}", f"control action {name!r} is not supported by the engine: ignored")
        self._publish()

    # ------------------------------------------------------------------------------------------
    # Reporting

    def _publish(self) -> None:
        """Publish a new immutable snapshot for the view (engine thread): each part's share."""
        self._published = now = time.perf_counter()
        conductor, controls = self.conductor, self.controls
        self.status = EngineStatus(
            **self.scheduler.view(), **self.responder.view(), **self.outages.view(now), **self.player.view(),
            running=self.clock.running and not self._ended, mode=conductor.mode, state=self.state,
            response_bars=self.config.response_bars, loop=conductor.replay is not None and conductor.replay.kind == "loop",
            recent=tuple(self.recent), cc_map=tuple(controls.as_dict().items()) if hasattr(controls, "as_dict") else (),
        )
