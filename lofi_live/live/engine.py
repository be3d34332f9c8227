"""The live loop: played notes in, tokens through the model, notes out on the 0.5-beat grid.

The pieces, each owning its part (``docs/LIVE_ENGINE.md`` tells the whole story):

* :mod:`lofi_live.live.intake`: what the MIDI input thread hands over, decoded; the feedback guard;
* :mod:`lofi_live.live.timeline`: played (and, for grid models, sounded) notes -> one token per step,
  the model's tokens beside them, the window the model reads;
* :mod:`lofi_live.live.played`: a played note: passed through, recorded, tokenized, told to the conductor;
* :mod:`lofi_live.live.conductor`: the modes' policy: when the model plays and for how long;
* :mod:`lofi_live.live.inference`: the look-ahead and the inference thread (stepper and sampler);
* :mod:`lofi_live.live.voices`: note-ons, held notes, timed note-offs, All Notes Off, the metronome;
* :mod:`lofi_live.live.actions`: what the controller's actions and the DAW's transport do;
* :mod:`lofi_live.live.outage`: holding safely while the MIDI system or a port is gone, and going on after;
* :mod:`lofi_live.live.report`: the view's snapshot and the figures of a run.

Threads
    * the MIDI input thread (rtmidi's) only calls :meth:`Engine.on_message` (stamp and queue);
    * the engine thread (:meth:`Engine._loop`) owns everything else: it reads the queue, keeps the
      clock, tokenizes played notes, decides what the model plays, sends every output message,
      times note-offs, records the session and publishes an immutable :class:`EngineStatus` for
      the view (:meth:`Engine.snapshot`);
    * the inference thread computes the next token ahead of time; changes to the sampler reach it
      as messages.

Grid
    Grid times come from the clock's beat-to-time mapping (``clock.time_of_beat``), never from adding intervals:
    nothing drifts. The engine thread sleeps until ~1.5 ms before a boundary, then spins, so onsets
    leave within a fraction of a millisecond of the ideal grid time (MIDI clock: :mod:`lofi_live.live.actions`;
    Link: :mod:`lofi_live.timing.link`, its timeline refreshed at every pass of the loop).

Faults
    Only the decoding of a MIDI message may be treated as bad input (:mod:`lofi_live.live.intake`). A
    fault in the engine's own logic (a stepper or a sampler that raises, on any clock) ends the loop:
    every sounding note gets its note-off, All Notes Off goes to every channel used, ``error`` holds
    the cause and ``lofi-live run`` says it in one line and exits non-zero. The MIDI system or a
    port going away is no fault of the engine's: it holds and goes on (:mod:`lofi_live.live.outage`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import mido
import numpy as np

from lofi_live.live import actions
from lofi_live.live import outage
from lofi_live.live import played
from lofi_live.live import report
from lofi_live.tokens import rules as token_rules
from lofi_live.timing.clock import InternalClock, MidiClock, make_clock, step_beat
from lofi_live.live.conductor import STEPS_PER_BAR, Conductor
from lofi_live.errors import LofiError
from lofi_live.tokens.grid import MAX_RESTS
from lofi_live.timing.groove import Dynamics, Humanize, Swing
from lofi_live.live.inference import InferenceWorker, Job, KeyLock, LookAhead
from lofi_live.live.intake import Control, FeedbackGuard, Intake, Note, Oddities, Transport
from lofi_live.midi.port_watch import PortEvent
from lofi_live.live.timeline import GridSteps, OnsetSteps, Timeline
from lofi_live.tokens.rules import GRID_BEATS
from lofi_live.live.view import EngineStatus
from lofi_live.live.voices import SessionLike, Voices

#: The engine thread spins (busy-waits) for this long before a boundary instead of sleeping.
SPIN_SECONDS = 0.0015
#: Longest sleep of the engine loop, so closed steps and timers are seen promptly.
MAX_WAIT = 0.02
#: The view's snapshot is published at least this often (seconds) between boundaries.
PUBLISH_SECONDS = 0.05
#: Steps the view's piano roll can show.
RECENT_STEPS = 256


@dataclass
class EngineConfig:
    bpm: float = 120.0
    clock: str = "internal"  # internal | midi | link
    mode: str = "continue"
    wait_beats: float = 2.0
    release_ms: float | None = None  # continue mode: a phrase also ends after this much silence
    response_bars: float = 4.0
    gate: float = 0.9  # fraction of a grid step (seed models)
    velocity: int | None = None  # the model's notes; None: the dynamics of the player's last phrase
    swing: float = 50.0  # where the off-beat eighth lies in its beat, in % (50 = straight)
    humanize: bool = False  # seeded variation of the model's velocities and onsets
    seed: int | None = None  # humanize's seed
    out_channel: int = 0  # 0-based
    in_channel: int | None = None  # 0-based, None = all
    thru: bool = False
    offset_ms: float = 0.0
    metronome: int | None = None  # 0-based channel
    max_note_beats: float = 8.0
    echo_ms: float = 30.0
    simulate_slow_ms: float = 0.0
    start_delay: float = 0.2  # seconds from start() to beat 0 (internal clock)
    spin: float = SPIN_SECONDS
    realtime: bool = True  # try a real-time priority for the engine thread


class Engine:
    """The live engine. ``start()`` runs it on its own thread; ``stop()`` ends it with no note left on."""

    def __init__(
        self,
        model,
        sampler,
        send: Callable[[mido.Message], Any],
        config: EngineConfig | None = None,
        session: SessionLike | None = None,
        key: str | None = None,
        scale: str = "minor",
        controls: Any = None,
        models: Sequence[Any] = (),
    ):
        self.model, self.sampler = model, sampler
        # model_select: every loaded model; a switch waits for the next boundary (actions.switch_model)
        self.models = list(models) or [model]
        if model not in self.models:
            self.models.insert(0, model)
        if len({each.tokens for each in self.models}) > 1:
            raise LofiError("--model: grid and seed models cannot be switched between (give models of one tokenization)")
        self.grid = model.tokens == "grid"
        self.model_index = self.models.index(model)
        self.pending_model: int | None = None
        self.config = cfg = config or EngineConfig()
        self.clock = make_clock(cfg.clock, cfg.bpm)
        self.odd = Oddities()
        guard = FeedbackGuard(cfg.echo_ms / 1000.0)
        self.intake = Intake(self.odd, guard, cfg.in_channel, cfg.clock == "midi", controls)
        channels = {cfg.out_channel} | ({cfg.metronome} if cfg.metronome is not None else set())
        self.voices = Voices(send, guard, self.clock, cfg.max_note_beats, channels, session)
        self._onset_masks: dict[int, np.ndarray] = {}  # per model: the tokens a response may open with
        self.timeline = Timeline(model.window, max_rests=MAX_RESTS if self.grid else None)
        self.swing = Swing(cfg.swing)
        self.humanize = Humanize(cfg.humanize, cfg.seed)
        self.dynamics = Dynamics(cfg.velocity, self.humanize)
        self._offsets: dict[int, float] = {}  # humanize: the onset offset (beats) of each step to come
        self.steps: GridSteps | OnsetSteps = GridSteps(self.swing) if self.grid else OnsetSteps(self.swing)
        if self.grid:
            self.voices.on_model_off = lambda key, beat: self.steps.note_off(("model", *key), beat)
        self.conductor = Conductor(cfg)
        self.outages = outage.Outages()
        self.lookahead = LookAhead()
        self.worker: InferenceWorker | None = None
        self.keylock = KeyLock(model.vocabulary, key, scale)
        self.temperature = sampler.temperature  # the setting; the sampler itself is the inference thread's
        self.state = "idle"  # at the last boundary: idle, listening (the player's turn) or responding
        self._state_sent: str | None = None
        self.recorded_bpm = cfg.bpm
        self._gate_beats = cfg.gate * GRID_BEATS
        # grid state
        self.next_step = 0
        self.step = -1
        self.midi_due: tuple[int, float] | None = None
        self.played_steps = 0
        self.emission_errors: deque[float] = deque(maxlen=20000)
        self.recent: deque[tuple[int, str, tuple[int, ...]]] = deque(maxlen=RECENT_STEPS)
        self.model_steps: set[int] = set()  # grid models: steps the model played, not yet closed
        self._published = 0.0
        self.status = EngineStatus()
        # life cycle
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.rt_priority = False
        self._ended = False
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

    def on_message(self, message: mido.Message) -> None:
        """The input port's callback (MIDI input thread): stamp and queue, nothing else."""
        self.intake.on_message(message)

    def on_port_event(self, event: PortEvent) -> None:
        """The port watcher's callback: queued with the input, so it is handled in order with the notes."""
        self.intake.on_message(event)

    # ------------------------------------------------------------------------------------------
    # Life cycle

    def prime(self, tokens: Sequence[str]) -> int:
        """Fill the window from seed tokens (before start); the model then responds at once."""
        indices = self.model.encode(list(tokens))
        for index in indices[-self.model.window :]:
            self.timeline.append(-1, "seed", self.model.vocabulary[index], index)
        if indices:
            self.conductor.seed()
        return len(indices)

    def start_worker(self) -> None:
        """Start the inference thread; from now on it alone touches the sampler."""
        self.worker = InferenceWorker(self.model, self.sampler, self.config.simulate_slow_ms)
        self.lookahead.worker = self.worker

    def start(self) -> None:
        self.start_worker()
        self._thread = threading.Thread(target=self._main, name="lofi-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the engine to end; it sends every note-off and CC 123 from its own thread."""
        self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def panic(self) -> None:
        """Note-off for everything sounding, then All Notes Off (CC 123) on every channel used."""
        self.voices.panic()

    def _main(self) -> None:
        try:
            if self.config.realtime:
                self._try_realtime()
            self._loop()
        except BaseException as error:  # noqa: BLE001 - the caller reports it, after the panic below
            self.error = error
        finally:
            try:
                self.panic()
            finally:
                if self.worker is not None:
                    self.worker.stop()
                self._ended = True
                self._publish()
                self.finished.set()

    def _try_realtime(self) -> None:
        if os.environ.get("LOFI_LIVE_NO_REALTIME"):
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # this thread only (Linux)
            self.rt_priority = True
        except (AttributeError, OSError, PermissionError):
            pass

    # ------------------------------------------------------------------------------------------
    # The loop

    def _loop(self) -> None:
        cfg = self.config
        clock = self.clock
        if not isinstance(clock, MidiClock):  # the grid is known ahead: internal clock, Link
            self.next_step = clock.start(time.perf_counter() + cfg.start_delay)
            self.plan(self.next_step)
        while not self._stopping.is_set():
            now = time.perf_counter()
            emit_at = self._emit_at()
            deadline = now + MAX_WAIT
            if emit_at is not None:
                deadline = min(deadline, emit_at - cfg.spin)
            timer = self.voices.next_timer()
            if timer is not None:
                deadline = min(deadline, timer)
            self._drain(deadline)
            now = time.perf_counter()
            if not isinstance(clock, MidiClock):  # Link: the session's tempo, phase and start/stop
                actions.follow(self, clock.poll(now))
            self.voices.run_timers(now)
            self.close_steps(now)
            emit_at = self._emit_at()  # again: a tempo control may have moved the grid meanwhile
            if emit_at is not None and now >= emit_at - cfg.spin:
                while time.perf_counter() < emit_at:
                    pass
                if self.midi_due is not None:
                    step, self.midi_due = self.midi_due[0], None
                    self.boundary(step, emit_at)
                else:
                    self.boundary(self.next_step, emit_at)
            elif now - self._published > PUBLISH_SECONDS and (emit_at is None or emit_at - now > 0.005):
                self._publish()

    def _emit_at(self) -> float | None:
        """When the next boundary is sent: its swung grid time plus ``--offset-ms`` (MIDI clock: when due)."""
        if not isinstance(self.clock, MidiClock) and self.clock.running:  # internal, Link while its session plays
            return self.clock.time_of_beat(self.sounded_beat(self.next_step)) + self.config.offset_ms / 1000.0
        return None if self.midi_due is None else self.midi_due[1]

    def sounded_beat(self, step: int) -> float:
        """The beat grid step ``step`` sounds at: swung (``--swing``), moved by ``--humanize``.

        The humanize offset of a step is drawn once (kept until its boundary), so the time the loop
        waits for and the beat recorded for the step agree."""
        if step not in self._offsets:
            self._offsets[step] = self.humanize.offset_beats(self.clock.bpm, self.swing)
        return self.swing.step_beat(step) + self._offsets[step]

    def swing_delay(self, step: int) -> float:
        """``--clock midi``: seconds after its tick that step ``step`` sounds (a step never sounds before its tick)."""
        return max(0.0, self.sounded_beat(step) - step_beat(step)) * self.clock.seconds_per_beat

    def _drain(self, deadline: float) -> None:
        """Handle queued input until ``deadline`` (sleeping on the queue when it is empty)."""
        for stamp, message in self.intake.receive(deadline):
            self._handle(message, stamp, time.perf_counter())
            emit_at = self._emit_at()
            if emit_at is not None and emit_at - self.config.spin < deadline:
                return  # a boundary came due sooner (the MIDI clock announced one ahead): the loop waits for it

    def _handle(self, message: mido.Message, stamp: float, now: float | None = None) -> None:
        """One input message that arrived at ``stamp``, acted on at ``now`` (default: ``stamp``).

        A note keeps its arrival stamp (that is when it was played). A control takes effect when it is
        applied: a tempo change anchored at an earlier arrival would move beats that were already sent
        (and read by the view and the journal) under the old tempo."""
        if isinstance(message, PortEvent):
            outage.handle(self, message, stamp)
            self._publish()
            return
        event = self.intake.decode(message, stamp)
        if isinstance(event, Note):
            played.note(self, event)
        elif isinstance(event, Transport):
            actions.transport(self, event)
        elif isinstance(event, Control):
            for action in event.actions:
                self.apply(action, event.stamp if now is None else max(now, event.stamp))

    # ------------------------------------------------------------------------------------------
    # Played notes

    def close_steps(self, now: float) -> None:
        """Tokens of the steps that closed by ``now`` into the timeline (grid models: then plan)."""
        if not self.clock.running or self.outages.holding:
            return
        for step, token in self.steps.close_due(self.clock.beat_at(now)):
            if self.grid:
                part = "model" if step in self.model_steps else "player"
                self.model_steps.discard(step)
                self._append(step, part, token)
                if step + 1 >= self.next_step:
                    self.plan(step + 1)
            else:
                self._append(step, "player", token)

    def _append(self, step: int, part: str, token: str) -> None:
        index = self.model.encode([token])[0]
        if self.model.vocabulary[index] != token:
            self.odd("nearest", f"played {token} is not in the model's vocabulary: using the nearest known token")
        self.timeline.append(step, part, self.model.vocabulary[index], index)

    # ------------------------------------------------------------------------------------------
    # Grid boundaries

    def boundary(self, step: int, when: float) -> None:
        """Grid step ``step`` at time ``when``: send first, then plan the next step."""
        self.step = step
        self.next_step = step + 1
        cfg = self.config
        lookahead = self.lookahead
        index = None
        job = lookahead.job
        if job is not None and not job.cancelled and self.conductor.still_plays():
            index, late = lookahead.take(step)
            if late:
                self.odd("late", "a token was not ready at its grid time: step skipped (see late steps)")
        else:
            lookahead.drop_done()
        beat = self.sounded_beat(step)
        for past in [each for each in self._offsets if each <= step]:
            del self._offsets[past]
        if index is not None:
            self._play(step, index, when, beat)
        else:
            if self.grid:  # the model's notes end with its response
                self.voices.release("model", beat)
            self.conductor.rested()
        if not isinstance(self.clock, InternalClock) and step % STEPS_PER_BAR == 0:  # MIDI, Link
            actions.record_tempo(self, step)
        if cfg.metronome is not None and step % 2 == 0 and not self.outages.holding:
            self.voices.click(when, cfg.metronome, step % STEPS_PER_BAR == 0)
            if index is None:
                self.emission_errors.append(time.perf_counter() - when)
        if self.pending_model is not None:
            actions.switch_model(self)
        if not self.grid:
            self.plan(step + 1)
        # what this step is (the conductor's state is already about the next one)
        self.state = "responding" if index is not None else "idle" if self.conductor.state == "idle" else "listening"
        if self.state != self._state_sent:
            self._send_state()
        self._publish()

    def _play(self, step: int, index: int, when: float, beat: float) -> None:
        """The model's token at boundary ``step``: notes struck (or held, or released), recorded."""
        cfg, voices = self.config, self.voices
        token = self.model.vocabulary[index]
        struck = token_rules.token_pitches(token)  # none for hold and rest
        velocities = [(pitch, self.dynamics.velocity(step)) for pitch in struck]
        self.conductor.played(token, self.timeline.window_tokens)
        if self.grid:
            if token != token_rules.HOLD:  # an onset or a rest ends what the model sounds
                voices.release("model", beat)
            bound = when + cfg.max_note_beats * self.clock.seconds_per_beat  # held at most that long
            for pitch, velocity in velocities:
                voices.note_on(cfg.out_channel, pitch, velocity, "model", bound, beat, beat + cfg.max_note_beats)
                self.steps.note_on(("model", cfg.out_channel, pitch), beat)
            self.steps.begin(step)
            self.model_steps.add(step)  # its token enters the timeline when the step closes
        else:
            # the gate is a fraction of the step as it sounds: a swung off-beat is shorter
            gate = self.swing.sounded(step_beat(step) + self._gate_beats) - self.swing.step_beat(step)
            off = when + gate * self.clock.seconds_per_beat
            for pitch, velocity in velocities:
                voices.note_on(cfg.out_channel, pitch, velocity, "model", off, beat, beat + gate)
            self.timeline.append(step, "model", token, index)
        self.emission_errors.append(time.perf_counter() - when)
        for pitch, velocity in velocities:
            self.session.note_on(beat, "model", pitch, velocity, cfg.out_channel)
        sounding = tuple(key[1] for key, entry in voices.sounding.items() if entry.part == "model")
        self.recent.append((step, "model", sounding if token == token_rules.HOLD else tuple(struck)))
        self.played_steps += 1

    def plan(self, step: int) -> None:
        """Start computing the token for ``step`` if the model plays then."""
        model, conductor, lookahead = self.model, self.conductor, self.lookahead
        if self.outages.holding:  # nobody would hear it
            return
        if not conductor.should_play(step, self.clock.bpm, len(self.timeline) > 0):
            return
        if lookahead.job is not None:  # still computing an earlier (late) token: it will serve this step
            return
        replay = conductor.replay
        if replay is not None and replay.kind == "loop":  # no model: the token is known
            tokens = replay.response.tokens
            job = Job(step, self.timeline.count, [])
            job.token = model.encode([tokens[replay.pos % len(tokens)]])[0]
            lookahead.ready(job)
            return
        allowed = self._opening(self.keylock.mask(self.timeline))
        if replay is not None:  # mutate: the old context and what this response played so far
            sequence = model.encode(replay.response.context + replay.response.tokens)
            job = Job(step, len(sequence), sequence[-model.window :], allowed, model, replay.stream)
        else:
            job = Job(step, self.timeline.count, self.timeline.window_indices(), allowed, model)
        lookahead.submit(job)

    def _opening(self, allowed: Any) -> Any:
        """A grid model's response opens with an onset, never ``hold`` or ``rest``.

        The silence before a response is the player's pause (already in the window as rests); a
        response that opened with more of it could stay silent for its whole length, and a hold
        would hold nothing. Later steps are the network's own choice.
        """
        model = self.model
        if model.tokens != "grid" or self.conductor.response_open:
            return allowed
        onsets = self._onset_masks.get(id(model))
        if onsets is None:  # once per model, not on every response
            onsets = np.array([not token_rules.is_rhythm(t) for t in model.vocabulary], dtype=bool)
            self._onset_masks[id(model)] = onsets
        return onsets if allowed is None else np.asarray(allowed, dtype=bool) & onsets

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
    # MIDI control

    def apply(self, action: Any, now: float | None = None) -> None:
        """Apply one control action at ``now`` (default: this moment): :mod:`lofi_live.live.actions`."""
        actions.apply(self, action, time.perf_counter() if now is None else now)
        self._publish()

    # ------------------------------------------------------------------------------------------
    # Reporting

    def _publish(self) -> None:
        """Publish a new immutable snapshot for the view (engine thread)."""
        self._published = time.perf_counter()
        self.status = report.status_of(self)

    def snapshot(self) -> EngineStatus:
        """The engine's latest published status (safe from any thread: it is never changed)."""
        return self.status

    def stats(self) -> dict[str, float]:
        """Figures of the whole run, for the line printed at exit (read once the engine has stopped)."""
        return report.stats_of(self)
