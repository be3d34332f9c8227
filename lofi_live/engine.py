"""The live loop: played notes in, tokens through the model, notes out on the 0.5-beat grid.

Threads
    * the MIDI input thread (rtmidi's) only calls :meth:`Engine.on_message`, which stamps the message
      with ``time.perf_counter()`` and puts it on a queue: nothing else;
    * the engine thread (:meth:`Engine._loop`) owns everything else: it reads the queue, keeps the
      clock, tokenizes played notes, decides what the model plays, sends every output message,
      times note-offs and records the session;
    * the inference thread (:class:`InferenceWorker`) computes the next token ahead of time.

Grid and look-ahead
    Right after grid boundary ``n`` is sent, the engine decides whether the model plays at step
    ``n + 1`` and, if so, hands the current window to the inference thread. At boundary ``n + 1``
    the token is normally long ready, so the boundary only sends messages. The engine thread sleeps
    until ~1.5 ms before the boundary, then spins, so onsets leave within a fraction of a millisecond
    of the ideal grid time. Grid times come from the clock's anchor (``clock.step_time(n)``), never
    from adding intervals: nothing drifts.

Overload rule (documented, counted)
    When the token for step ``n`` is not ready at its grid time the grid does not wait: step ``n``
    stays silent (``late_steps`` += 1) and the token, once ready, is played at the next grid step
    instead (if the model should still play then). No step is ever sent late and the grid never
    moves, so a model slower than a grid step plays every other step (or fewer), on the grid.

Played notes -> tokens
    A played note belongs to the nearest grid step (a note a little early still counts for the
    step it anticipates). The notes of one step become one token when the step closes (a quarter of
    a step after its boundary): a lone note is its pitch token (``C4``), several notes a chord token
    (``tokens.onset_token``: normalOrder). A token the model does not know becomes the nearest known
    one (``tokens.nearest_token`` / ``Model.encode``). Note-on with velocity 0 is a note-off.

Window
    The shared timeline of player and model tokens, in step order; the model sees its last
    ``window`` (32) tokens. It is primed from ``--seed-midi`` (the model then starts at once) or from
    what is played. The model's own token enters the timeline when it is sent, a played token when
    its step closes, so a token the model computed but did not play never enters the context.

Modes
    ``continue`` (call and response): idle until the player plays (listening); once the player has
    been silent ``wait_beats`` beats (no note held, no note-on or note-off), the model responds for
    ``response_bars`` bars or until the player plays again (a played note-on cancels the next model
    note at once), then waits for the player again (idle). With a seed it responds at once.
    ``accompany``: the model plays every grid step while the player plays too, and goes on for
    ``response_bars`` bars after the player's last note (or from the seed), then rests until the
    player plays again.

Robust input
    Anything that is not a note, a mapped control change or clock (in ``--clock midi``) is ignored;
    each kind of oddity (sysex, clock without start, note-off without note-on, a note held past
    ``max_note_beats``, pitch bend, aftertouch, program change, unknown or malformed data, a flood)
    is logged once, not per message. Feedback guard: a note-on or note-off that matches one the
    engine itself sent ``echo_ms`` ago or less is its own output coming back (loopMIDI, a DAW
    routing) and is ignored, so the engine never answers itself.

MIDI control (:meth:`Engine.apply`, actions from ``lofi_live.controls``)
    Temperature, tempo, mode, response length and the key lock change settings the next step uses.
    Panic drops the computed token and silences everything at once; the model then waits for the
    player. ``mutate`` starts a new response sampled again from the context the last response
    answered (a separate token stream for the inference thread); ``loop`` repeats the last
    response's tokens without the model until toggled off; ``model_select`` switches among the
    loaded models at the next boundary, re-encoding the timeline to the new vocabulary.

No stuck notes
    Every note sent is tracked until its note-off. On stop (also MIDI Stop), Ctrl-C or any error, every
    sounding note gets its note-off and every channel used gets All Notes Off (CC 123).
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import mido

from lofi_live import tokens as token_rules
from lofi_live.clock import InternalClock, MidiClock, step_beat
from lofi_live.tokens import GRID_BEATS

log = logging.getLogger("lofi_live.engine")

MODES = ("continue", "accompany")
STATES = ("idle", "listening", "responding")
#: Steps per 4/4 bar.
STEPS_PER_BAR = int(4 / GRID_BEATS)
#: The engine thread spins (busy-waits) for this long before a boundary instead of sleeping.
SPIN_SECONDS = 0.0015
#: Longest sleep of the engine loop, so closed steps and timers are seen promptly.
MAX_WAIT = 0.02
#: A flood: more than this many messages waiting on the input queue.
FLOOD_BACKLOG = 2000
#: Metronome pitches (General MIDI percussion: high and low wood block) and length in beats.
METRONOME_ACCENT, METRONOME_BEAT, METRONOME_BEATS = 76, 77, 0.1


class SessionLike(Protocol):
    def note_on(self, beat: float, part: str, pitch: int, velocity: int, channel: int = 0) -> None: ...
    def note_off(self, beat: float, part: str, pitch: int, channel: int = 0) -> None: ...


class NullSession:
    """A session that records nothing (no ``--record``)."""

    journal_path = None

    def note_on(self, *args: Any, **kwargs: Any) -> None:
        pass

    def note_off(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class EngineConfig:
    bpm: float = 120.0
    clock: str = "internal"  # internal | midi
    mode: str = "continue"
    wait_beats: float = 2.0
    release_ms: float | None = None  # continue mode: a phrase also ends after this much silence
    response_bars: float = 4.0
    gate: float = 0.9  # fraction of a grid step
    velocity: int = 90
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


def player_step(beat: float) -> int:
    """The grid step a played note belongs to: the nearest one."""
    return int(beat / GRID_BEATS + 0.5) if beat >= 0 else -int(-beat / GRID_BEATS + 0.5)


class PlayerTokenizer:
    """Groups played note-ons by grid step; a step closes a quarter step after its boundary."""

    def __init__(self) -> None:
        self.pending: dict[int, list[int]] = {}

    def add(self, beat: float, pitch: int) -> int:
        step = player_step(beat)
        self.pending.setdefault(step, []).append(pitch)
        return step

    @staticmethod
    def close_beat(step: int) -> float:
        return step_beat(step) + GRID_BEATS / 2

    def close_due(self, beat: float) -> list[tuple[int, str]]:
        """``(step, token)`` of every step closed by ``beat``, in step order."""
        if not self.pending:
            return []
        done = sorted(step for step in self.pending if self.close_beat(step) <= beat)
        return [(step, token_rules.onset_token(self.pending.pop(step))) for step in done]

    def close_all(self) -> list[tuple[int, str]]:
        done = sorted(self.pending)
        return [(step, token_rules.onset_token(self.pending.pop(step))) for step in done]


@dataclass
class Entry:
    step: int
    part: str
    token: str
    index: int


class Timeline:
    """The shared, append-only list of player and model tokens; the model sees the last ``window``."""

    def __init__(self, window: int = 32, keep: int = 512):
        self.window = window
        self.entries: deque[Entry] = deque(maxlen=keep)
        self.count = 0  # tokens ever appended (absolute position of the end)

    def append(self, step: int, part: str, token: str, index: int) -> None:
        self.entries.append(Entry(step, part, token, index))
        self.count += 1

    def window_indices(self) -> list[int]:
        return [entry.index for entry in list(self.entries)[-self.window :]]

    def window_tokens(self) -> list[str]:
        return [entry.token for entry in list(self.entries)[-self.window :]]

    def tokens(self, part: str | None = None, last: int | None = None) -> list[str]:
        found = [e.token for e in self.entries if part is None or e.part == part]
        return found[-last:] if last else found

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class Response:
    """One model response: the window tokens it answered (``context``) and the tokens it played."""

    context: list[str]
    tokens: list[str] = field(default_factory=list)


@dataclass
class Replay:
    """A response played again: ``mutate`` samples anew from ``response.context`` (a stream of its
    own for the inference worker); ``loop`` repeats ``response.tokens`` without the model."""

    kind: str  # "mutate" | "loop"
    response: Response
    stream: int = 0
    pos: int = 0


#: A response keeps at most this many tokens (accompany mode can respond for a long time).
MAX_RESPONSE_TOKENS = 512


class FeedbackGuard:
    """Recognises the engine's own notes coming back on its input within ``window`` seconds."""

    def __init__(self, window: float = 0.03):
        self.window = window
        self.sent: deque[tuple[float, bool, int]] = deque()
        self.ignored = 0

    def note_sent(self, now: float, is_on: bool, pitch: int) -> None:
        self.sent.append((now, is_on, pitch))
        if len(self.sent) > 4096:
            self.sent.popleft()

    def is_echo(self, now: float, is_on: bool, pitch: int) -> bool:
        if self.window <= 0:
            return False
        sent = self.sent
        while sent and sent[0][0] < now - self.window:
            sent.popleft()
        for i, (when, on, note) in enumerate(sent):
            if on == is_on and note == pitch and when <= now + 0.001:
                del sent[i]
                self.ignored += 1
                return True
        return False


class Job:
    """One look-ahead computation: the window as of a boundary -> the token for ``step``."""

    __slots__ = ("step", "end", "window", "allowed", "done", "token", "seconds", "cancelled", "error", "model", "stream")

    def __init__(self, step: int, end: int, window: list[int], allowed=None, model=None, stream: int = 0):
        self.step, self.end, self.window, self.allowed = step, end, window, allowed
        # ``model``: the model to run (None: the worker's); ``stream``: which token sequence ``end``
        # counts in (0 = the timeline, another number = a mutate's replayed context).
        self.model, self.stream = model, stream
        self.done = threading.Event()
        self.token: int | None = None
        self.seconds = 0.0
        self.cancelled = False
        self.error: BaseException | None = None


class InferenceWorker:
    """Computes tokens on its own thread with the model's stepper (O(1) per new timeline token).

    The stepper follows the timeline: tokens appended since the last job are fed with ``advance``;
    anything else (first job, a gap longer than the window, another stream or another model)
    rebuilds the state with ``reset``. Only the newest submitted job waits; an older one not yet
    started is dropped.
    """

    def __init__(self, model, sampler, slow_ms: float = 0.0):
        self.model, self.sampler, self.slow = model, sampler, slow_ms / 1000.0
        self.stepper = model.stepper()
        self._stream = 0
        self._fed_end = -1
        self._probs = None
        self._cond = threading.Condition()
        self._next: Job | None = None
        self._busy = False
        self._stop = False
        self.latencies: deque[float] = deque(maxlen=4096)
        self.thread = threading.Thread(target=self._run, name="lofi-inference", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._next is not None:
                self._next.cancelled = True
                self._next.done.set()
            self._next = job
            self._cond.notify()

    @property
    def busy(self) -> bool:
        return self._busy or self._next is not None

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._next is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._next = self._next, None
                self._busy = True
            start = time.perf_counter()
            try:
                if self.slow:
                    time.sleep(self.slow)
                job.token = self.compute(job)
            except BaseException as error:  # noqa: BLE001 - handed to the engine thread
                job.error = error
            job.seconds = time.perf_counter() - start
            self.latencies.append(job.seconds)
            self._busy = False
            job.done.set()

    def compute(self, job: Job) -> int:
        if job.model is not None and job.model is not self.model:  # model_select: switch here
            self.model, self.stepper, self._probs = job.model, job.model.stepper(), None
        gap = job.end - self._fed_end
        window = job.window
        if self._probs is None or job.stream != self._stream or gap < 0 or gap > len(window) or gap >= self.stepper.window:
            self._stream = job.stream
            probs = self.stepper.reset(window)
        else:
            probs = self._probs
            for index in window[len(window) - gap :]:
                probs = self.stepper.advance(index)
        self._fed_end, self._probs = job.end, probs
        return int(self.sampler.choose(probs, job.allowed))


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


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
        self.model, self.sampler, self._send_port = model, sampler, send
        # model_select: every loaded model; a switch waits for the next boundary (_switch_model)
        self.models = list(models) or [model]
        if model not in self.models:
            self.models.insert(0, model)
        self.model_index = self.models.index(model)
        self._pending_model: int | None = None
        self.config = config or EngineConfig()
        cfg = self.config
        if cfg.mode not in MODES:
            raise ValueError(f"unknown mode {cfg.mode!r}")
        self.session = session or NullSession()
        self.clock = MidiClock(cfg.bpm) if cfg.clock == "midi" else InternalClock(cfg.bpm)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.timeline = Timeline(model.window)
        self.tokenizer = PlayerTokenizer()
        self.guard = FeedbackGuard(cfg.echo_ms / 1000.0)
        self.controls = controls
        self._state_sent: str | None = None
        self._recorded_bpm = cfg.bpm
        self.worker: InferenceWorker | None = None
        # mode state
        self.mode = cfg.mode
        self.state = "idle"
        self.response_end = -1
        self.player_last_beat: float | None = None
        self.held: dict[tuple[int, int], float] = {}
        self.seeded = False
        # mutate and loop: the last response, and a replay of it in progress
        self.last_response: Response | None = None
        self._response_open = False  # the next model token continues self.last_response
        self.replay: Replay | None = None
        self._streams = 0
        self.hushed = False  # after panic: the model is silent until the player plays again
        # grid state
        self.next_step = 0
        self.step = -1
        self._midi_due: tuple[int, float] | None = None
        self.job: Job | None = None
        self.late_steps = 0
        self.played_steps = 0
        self.emission_errors: deque[float] = deque(maxlen=20000)
        # output state
        self.sounding: dict[tuple[int, int], tuple[int, str, float, float]] = {}  # key -> (gen, part, on_beat, off_beat)
        self._timers: list[tuple[float, int, tuple[int, int], int]] = []
        self._generation = 0
        self.used_channels: set[int] = {cfg.out_channel}
        if cfg.metronome is not None:
            self.used_channels.add(cfg.metronome)
        self.sent_log: deque[tuple[float, mido.Message]] | None = None
        # key lock
        self.key_setting, self.scale = key, scale
        self.key_name: str | None = None
        self._allowed = None
        self._key_checked = -1
        self._key_enabled = key is not None
        # bookkeeping
        self.oddities: dict[str, int] = {}
        self.recent: deque[tuple[int, str, list[int]]] = deque(maxlen=256)
        self.messages_in = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.rt_priority = False
        self._gate_beats = cfg.gate * GRID_BEATS
        self._set_key(key, scale)

    # ------------------------------------------------------------------------------------------
    # Input side (MIDI thread)

    def on_message(self, message: mido.Message) -> None:
        """The input port's callback: stamp and queue, nothing else."""
        self.queue.put((time.perf_counter(), message))

    # ------------------------------------------------------------------------------------------
    # Life cycle

    def prime(self, tokens: Sequence[str]) -> int:
        """Fill the window from seed tokens (before start); the model then responds at once."""
        indices = self.model.encode(list(tokens))
        for index in indices[-self.model.window :]:
            self.timeline.append(-1, "seed", self.model.vocabulary[index], index)
        if indices:
            self.seeded = True
            self.state = "responding"
            self.response_end = int(self.config.response_bars * STEPS_PER_BAR)
        return len(indices)

    def start(self) -> None:
        self.worker = InferenceWorker(self.model, self.sampler, self.config.simulate_slow_ms)
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

    def _main(self) -> None:
        try:
            if self.config.realtime:
                self._try_realtime()
            self._loop()
        except BaseException as error:  # noqa: BLE001 - reported by the caller after the panic
            self.error = error
            log.error("engine stopped by an error: %s: %s", type(error).__name__, error)
        finally:
            try:
                self.panic()
            finally:
                if self.worker is not None:
                    self.worker.stop()
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
        if isinstance(clock, InternalClock):
            clock.start(time.perf_counter() + cfg.start_delay)
            self._plan(0)
        offset = cfg.offset_ms / 1000.0
        while not self._stopping.is_set():
            now = time.perf_counter()
            emit_at = None
            if isinstance(clock, InternalClock):
                emit_at = clock.step_time(self.next_step) + offset
            elif self._midi_due is not None:
                emit_at = self._midi_due[1]
            deadline = now + MAX_WAIT
            if emit_at is not None:
                deadline = min(deadline, emit_at - cfg.spin)
            if self._timers:
                deadline = min(deadline, self._timers[0][0])
            self._drain(deadline)
            now = time.perf_counter()
            self._run_timers(now)
            self._close_player_steps(now)
            if emit_at is not None and now >= emit_at - cfg.spin:
                while time.perf_counter() < emit_at:
                    pass
                if self._midi_due is not None:
                    step, self._midi_due = self._midi_due[0], None
                    self._boundary(step, emit_at)
                else:
                    self._boundary(self.next_step, emit_at)

    def _drain(self, deadline: float) -> None:
        """Handle queued input until ``deadline`` (sleeping on the queue when it is empty)."""
        get = self.queue.get
        handled = 0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            try:
                stamp, message = get(timeout=remaining)
            except queue.Empty:
                return
            self._handle(message, stamp)
            handled += 1
            if handled % 1000 == 0 and self.queue.qsize() > FLOOD_BACKLOG:
                self._odd("flood", f"input flood: {self.queue.qsize()} messages waiting; the grid keeps time")

    # ------------------------------------------------------------------------------------------
    # Messages

    def _odd(self, kind: str, text: str) -> None:
        count = self.oddities.get(kind, 0)
        self.oddities[kind] = count + 1
        if count == 0:
            log.warning("%s (logged once)", text)

    def _handle(self, message: mido.Message, stamp: float) -> None:
        self.messages_in += 1
        kind = getattr(message, "type", None)
        try:
            if kind == "note_on" or kind == "note_off":
                self._note(message, stamp)
            elif kind in ("clock", "start", "stop", "continue", "songpos"):
                self._clock_message(kind, message, stamp)
            elif kind == "control_change":
                self._control(message, stamp)
            elif kind == "malformed":
                self._odd("malformed", "malformed MIDI data received: ignored")
            elif kind == "sysex":
                self._odd("sysex", "sysex received: ignored")
            elif kind == "pitchwheel":
                self._odd("pitchwheel", "pitch bend received: ignored")
            elif kind in ("aftertouch", "polytouch"):
                self._odd("aftertouch", "aftertouch received: ignored")
            elif kind == "program_change":
                self._odd("program_change", "program change received: ignored")
            elif kind in ("active_sensing", "reset", "tune_request", "quarter_frame", "song_select"):
                self._odd(kind, f"{kind} received: ignored")
            else:
                self._odd("unknown", f"unknown MIDI message {message!r}: ignored")
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            self._odd("malformed", f"malformed MIDI message ({error}): ignored")

    def _note(self, message: mido.Message, stamp: float) -> None:
        cfg = self.config
        channel, pitch = message.channel, message.note
        is_on = message.type == "note_on" and message.velocity > 0
        if self.guard.is_echo(stamp, is_on, pitch):
            self._odd("echo", "the engine's own notes come back on its input (output looped to input): ignoring them")
            return
        if cfg.in_channel is not None and channel != cfg.in_channel:
            self._odd("channel", f"notes on channel {channel + 1} ignored (--in-channel {cfg.in_channel + 1})")
            return
        if cfg.thru:
            self._thru(message, is_on, stamp)
        if not self.clock.running:
            self._odd("stopped", "notes played while the MIDI clock is stopped are not recorded")
            return
        beat = self.clock.beat_at(stamp)
        key = (channel, pitch)
        if is_on:
            if key in self.held:
                self.session.note_off(beat, "player", pitch, channel)
            self.held[key] = beat
            self.player_last_beat = beat
            self.session.note_on(beat, "player", pitch, message.velocity, channel)
            step = self.tokenizer.add(beat, pitch)
            self.recent.append((step, "player", [pitch]))
            self._player_onset(step)
        else:
            started = self.held.pop(key, None)
            if started is None:
                self._odd("orphan_off", "note-off without a note-on: ignored")
                return
            self.player_last_beat = max(beat, self.player_last_beat or beat)
            self.session.note_off(beat, "player", pitch, channel)

    def _thru(self, message: mido.Message, is_on: bool, stamp: float) -> None:
        key = (message.channel, message.note)
        if is_on:
            self._note_on(message.channel, message.note, message.velocity, "thru",
                          stamp + self.config.max_note_beats * self.clock.seconds_per_beat, None)
        elif key in self.sounding and self.sounding[key][1] == "thru":
            self._note_off(key, time.perf_counter(), None)

    def _player_onset(self, step: int) -> None:
        """A played note-on: the mode reacts at once (a loop, or a mutate in accompany mode, plays on)."""
        self.hushed = False
        if self.replay is not None and (self.replay.kind == "loop" or self.mode == "accompany"):
            return
        if self.mode == "continue":
            self.replay = None
            self._response_open = False
            if self.state == "responding":
                if self.job is not None:
                    self.job.cancelled = True
                    self.job = None
            self.state = "listening"
        else:
            self.state = "responding"
            if self.seeded:
                self.response_end = -1

    def _clock_message(self, kind: str, message: mido.Message, stamp: float) -> None:
        clock = self.clock
        if not isinstance(clock, MidiClock):
            self._odd("clock_ignored", "MIDI clock/transport messages received but the clock is internal (--clock midi follows them): ignored")
            return
        if kind == "clock" and not clock.running and not clock.started_once:
            self._odd("clock_without_start", "MIDI clock without Start: waiting for Start/Continue")
        event = clock.handle(kind, stamp, getattr(message, "pos", 0))
        if event is None:
            return
        if event.kind == "boundary":
            self._close_player_steps(stamp)
            offset = max(0.0, self.config.offset_ms / 1000.0)
            if offset:  # sent by the loop at the tick's time plus the offset
                if self._midi_due is not None:
                    self._boundary(*self._midi_due)
                self._midi_due = (event.step, stamp + offset)
            else:
                self._boundary(event.step, stamp)
        elif event.kind == "stop":
            self._release("model")
            self._release("metronome")
            if self.job is not None:
                self.job.cancelled = True
                self.job = None
            log.info("MIDI clock stopped at beat %.2f", clock.tick / 24)
        elif event.kind in ("start", "continue"):
            # Start: the very next tick is step 0, too soon to compute a token, so the model enters
            # at step 1. Continue: the next boundary is usually ticks away and is planned now.
            self.next_step = event.step
            if event.kind == "start":
                self._reset_player_beats()
            soon = event.kind == "start" or (clock.tick + 1) % 12 == 0
            self._plan(event.step + 1 if soon else event.step)
        elif event.kind == "position":
            self.next_step = event.step

    def _reset_player_beats(self) -> None:
        self.tokenizer.pending.clear()
        self.held.clear()
        self.player_last_beat = None

    def _control(self, message: mido.Message, stamp: float) -> None:
        if message.control in (120, 123) and message.value == 0:
            self._odd("cc_all_off", "All Notes Off received on the input: ignored")
            return
        controls = self.controls
        if controls is None:
            self._odd("cc", "control change received (no mapping): ignored")
            return
        try:
            actions = controls.handle(message)
        except Exception as error:  # noqa: BLE001 - a mapping bug must not stop the music
            self._odd("cc_error", f"control mapping failed: {error}")
            return
        for action in actions or []:
            self.apply(action)

    def apply(self, action: Any) -> None:
        """Apply one control action (from lofi_live.controls): duck-typed on ``name``/``value``."""
        name = getattr(action, "name", None) or getattr(action, "kind", None) or (action[0] if isinstance(action, tuple) else None)
        value = getattr(action, "value", None) if not isinstance(action, tuple) else (action[1] if len(action) > 1 else None)
        now = time.perf_counter()
        if name == "temperature" and value is not None:
            self.sampler.temperature = float(value)
        elif name == "tempo" and value is not None:
            if not isinstance(self.clock, InternalClock):
                self._odd("tempo_midi", "tempo control ignored: the tempo follows the MIDI clock (--clock midi)")
                return
            self.clock.set_bpm(float(value), now)
            if hasattr(self.session, "set_tempo"):
                self.session.set_tempo(self.clock.beat_at(now), self.clock.bpm)
        elif name == "mode" and value in MODES:
            self.mode = value
            if value == "continue" and self.state == "responding":
                self.response_end = self.next_step + int(round(self.config.response_bars * STEPS_PER_BAR))
        elif name == "response_bars" and value is not None:
            self.config.response_bars = float(value)
        elif name == "panic":  # silence now; the engine goes on and waits for the player
            self._cancel_job()
            self.replay, self._response_open, self.hushed = None, False, True
            self.state, self.response_end, self.player_last_beat = "idle", -1, None
            self.panic()
        elif name == "key_lock":
            self._key_enabled = not self._key_enabled if value is None else bool(value)
            self._key_checked = -1
            if self._key_enabled and self.key_setting is None:
                self.key_setting = "auto"
        elif name == "mutate":
            self._mutate()
        elif name == "loop":
            self._toggle_loop()
        elif name == "model_select" and value is not None:
            if 0 <= int(value) < len(self.models):
                self._pending_model = int(value)  # applied at the next boundary
        elif name is not None:
            self._odd(f"action_{name}", f"control action {name!r} is not supported by the engine: ignored")

    def _cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancelled = True
            self.job = None

    def _mutate(self) -> None:
        """Re-generate the last response: a new response of ``response_bars`` bars, sampled again
        from the context the last response started from, from the next grid step on."""
        last = self.last_response
        if last is None or not last.context:
            self._odd("mutate_nothing", "mutate: no response to re-generate yet: ignored")
            return
        self._cancel_job()
        self._streams += 1
        response = Response(list(last.context))
        self.last_response, self._response_open = response, True
        self.replay = Replay("mutate", response, stream=self._streams)
        self.state = "responding"
        self.response_end = self.next_step + int(round(self.config.response_bars * STEPS_PER_BAR))
        self._plan(self.next_step)

    def _toggle_loop(self) -> None:
        """Loop on: play the last response's tokens over and over (no sampling) until loop off."""
        if self.replay is not None and self.replay.kind == "loop":
            self._cancel_job()
            self.replay, self._response_open, self.state = None, False, "idle"
            return
        last = self.last_response
        if last is None or not last.tokens:
            self._odd("loop_nothing", "loop: no response to repeat yet: ignored")
            return
        self._cancel_job()
        self.replay = Replay("loop", Response(list(last.context), list(last.tokens)))
        self._response_open, self.state = False, "responding"
        self._plan(self.next_step)

    def _switch_model(self) -> None:
        """model_select, between two grid steps: the window is re-encoded to the new vocabulary."""
        index, self._pending_model = self._pending_model, None
        model = self.models[index]
        if model is self.model:
            return
        self._cancel_job()  # computed with the old vocabulary
        entries = list(self.timeline.entries)[-model.window :]  # all the new model will ever see of the past
        indices = model.encode([entry.token for entry in entries])
        if len(indices) == len(entries):  # timeline tokens are all well formed: always the case
            for entry, new in zip(entries, indices):
                entry.index = new
        self.model, self.model_index = model, index
        self.timeline.window = model.window
        self.sampler.forget()  # its repetition memory holds old indices
        self._allowed, self.key_name, self._key_checked = None, None, -1
        self._set_key(self.key_setting, self.scale)

    # ------------------------------------------------------------------------------------------
    # Grid

    def _close_player_steps(self, now: float) -> None:
        if not self.tokenizer.pending or not self.clock.running:
            return
        for step, token in self.tokenizer.close_due(self.clock.beat_at(now)):
            self._append_player_token(step, token)
        self._check_held(now)

    def _append_player_token(self, step: int, token: str) -> None:
        indices = self.model.encode([token])
        if not indices:
            self._odd("bad_token", f"played notes gave no usable token ({token})")
            return
        index = indices[0]
        if self.model.vocabulary[index] != token:
            self._odd("nearest", f"played {token} is not in the model's vocabulary: using the nearest known token")
        self.timeline.append(step, "player", self.model.vocabulary[index], index)

    def _check_held(self, now: float) -> None:
        limit = self.config.max_note_beats
        beat = self.clock.beat_at(now)
        for key, started in list(self.held.items()):
            if beat - started > limit:
                self._odd("never_released", f"a played note held over {limit:g} beats (no note-off?): treated as released")
                del self.held[key]
                self.session.note_off(beat, "player", key[1], key[0])

    def _player_silent(self, beat: float) -> bool:
        if self.player_last_beat is None:
            return False
        limit = self.config.max_note_beats
        if any(beat - started < limit for started in self.held.values()):
            return False
        return beat - self.player_last_beat >= self._phrase_end_beats()

    def _phrase_end_beats(self) -> float:
        """Silence that ends the player's phrase: ``wait_beats``, or ``release_ms`` at the current
        tempo when that is shorter (a release time, as AI Duet has, stays the same at any tempo)."""
        if not self.config.release_ms:
            return self.config.wait_beats
        return min(self.config.wait_beats, self.config.release_ms / 1000.0 * self.clock.bpm / 60.0)

    def _should_play(self, step: int) -> bool:
        """Whether the model plays at ``step`` (updates the mode state)."""
        if self.replay is not None:
            if self.replay.kind == "loop" or step < self.response_end:
                self.state = "responding"
                return True
            self.replay, self._response_open, self.state = None, False, "idle"  # the mutate is over
            return False
        if self.hushed or not len(self.timeline):
            return False
        beat = step_beat(step)
        bars_steps = int(round(self.config.response_bars * STEPS_PER_BAR))
        if self.mode == "continue":
            if self.state == "responding":
                if step >= self.response_end:
                    self.state = "idle"
                    return False
                return True
            if self.state == "listening" and self._player_silent(beat):
                self.state = "responding"
                self.response_end = step + bars_steps
                return True
            return False
        # accompany
        holding = any(beat - started < self.config.max_note_beats for started in self.held.values())
        if self.player_last_beat is not None and (
            holding or beat - self.player_last_beat <= self.config.response_bars * 4
        ):
            self.state = "responding"
            return True
        if self.seeded and self.response_end > step:
            self.state = "responding"
            return True
        if self.state == "responding":
            self.state = "idle"
        return False

    def _plan(self, step: int) -> None:
        """Right after a boundary: start computing the token for ``step`` if the model plays then."""
        if not self._should_play(step):
            return
        if self.job is not None:  # still computing an earlier (late) token: it will serve this step
            return
        replay = self.replay
        if replay is not None and replay.kind == "loop":  # no model: the token is known
            tokens = replay.response.tokens
            job = Job(step, self.timeline.count, [])
            job.token = self.model.encode([tokens[replay.pos % len(tokens)]])[0]
            job.done.set()
            self.job = job
            return
        if replay is not None:  # mutate: the old context and what this response played so far
            sequence = self.model.encode(replay.response.context + replay.response.tokens)
            job = Job(step, len(sequence), sequence[-self.model.window :], self._key_mask(), self.model, replay.stream)
        else:
            job = Job(step, self.timeline.count, self.timeline.window_indices(), self._key_mask(), self.model)
        self.job = job
        self.worker.submit(job)

    def _take_token(self, step: int) -> int | None:
        job = self.job
        if job is None:
            return None
        if job.cancelled:
            self.job = None
            return None
        if job.step > step:  # computed ahead for a later step (MIDI Start): not yet
            return None
        if not job.done.is_set():
            self.late_steps += 1
            self._odd("late", "a token was not ready at its grid time: step skipped (see late steps)")
            job.step = step + 1
            return None
        self.job = None
        if job.error is not None:
            raise job.error
        return job.token

    def _boundary(self, step: int, when: float) -> None:
        """Grid step ``step`` at time ``when``: send first, then plan the next step."""
        self.step = step
        self.next_step = step + 1
        cfg = self.config
        index = self._take_token(step) if self._still_plays(step) else self._drop_job()
        sent = False
        if index is not None:
            token = self.model.vocabulary[index]
            pitches = token_rules.token_pitches(token)
            off = when + self._gate_beats * self.clock.seconds_per_beat
            beat = step_beat(step)
            for pitch in pitches:
                self._note_on(cfg.out_channel, pitch, cfg.velocity, "model", off, beat)
            sent = True
            self.emission_errors.append(time.perf_counter() - when)
            self._note_response(token)
            self.timeline.append(step, "model", token, index)
            self.recent.append((step, "model", pitches))
            self.played_steps += 1
            for pitch in pitches:
                self.session.note_on(beat, "model", pitch, cfg.velocity, cfg.out_channel)
        if isinstance(self.clock, MidiClock) and step % STEPS_PER_BAR == 0:
            self._record_tempo(step)
        if cfg.metronome is not None and step % 2 == 0:
            pitch = METRONOME_ACCENT if step % STEPS_PER_BAR == 0 else METRONOME_BEAT
            self._note_on(cfg.metronome, pitch, 100, "metronome", when + METRONOME_BEATS * self.clock.seconds_per_beat, None)
            if not sent:
                self.emission_errors.append(time.perf_counter() - when)
        if not sent and self.state != "responding":
            self._response_open = False
        if self._pending_model is not None:
            self._switch_model()
        self._plan(step + 1)
        if self.state != self._state_sent:
            self._send_state()

    def _note_response(self, token: str) -> None:
        """Remember what the model plays (before it enters the timeline) for mutate and loop."""
        replay = self.replay
        if replay is not None and replay.kind == "loop":
            replay.pos += 1
            return
        if not self._response_open:
            self.last_response = Response(self.timeline.window_tokens())
            self._response_open = True
        if len(self.last_response.tokens) < MAX_RESPONSE_TOKENS:
            self.last_response.tokens.append(token)

    def _send_state(self) -> None:
        """Announce idle/listening/responding on the controls' state CC, when one is mapped."""
        self._state_sent = self.state
        controls = self.controls
        make = getattr(controls, "state_message", None)
        if make is None:
            return
        message = make(self.state, self.config.out_channel)
        if message is not None:
            self._send(message)

    def _record_tempo(self, step: int) -> None:
        """MIDI-clock sessions: write the DAW's tempo into the recording when it changes (once a bar)."""
        bpm = self.clock.bpm
        if abs(bpm - self._recorded_bpm) > 0.5 and hasattr(self.session, "set_tempo"):
            self._recorded_bpm = bpm
            try:
                self.session.set_tempo(step_beat(step), round(bpm, 2))
            except ValueError:
                pass

    def _still_plays(self, step: int) -> bool:
        """At the boundary: the plan still holds (the player did not come back meanwhile)."""
        return self.job is not None and not self.job.cancelled and (self.mode == "accompany" or self.state == "responding")

    def _drop_job(self) -> None:
        if self.job is not None and self.job.done.is_set():
            self.job = None
        return None

    # ------------------------------------------------------------------------------------------
    # Output

    def _send(self, message: mido.Message) -> None:
        self._send_port(message)
        if self.sent_log is not None:
            self.sent_log.append((time.perf_counter(), message))

    def _note_on(self, channel: int, pitch: int, velocity: int, part: str, off_time: float, beat: float | None) -> None:
        key = (channel, pitch)
        now = time.perf_counter()
        if key in self.sounding:  # retrigger: end the sounding one first
            self._note_off(key, now, beat)
        self._generation += 1
        gen = self._generation
        off_time = min(off_time, now + self.config.max_note_beats * self.clock.seconds_per_beat)
        self._send(mido.Message("note_on", channel=channel, note=pitch, velocity=max(1, min(127, velocity))))
        self.guard.note_sent(time.perf_counter(), True, pitch)
        off_beat = None if beat is None else beat + self._gate_beats
        self.sounding[key] = (gen, part, beat if beat is not None else -1.0, off_beat if off_beat is not None else -1.0)
        self.used_channels.add(channel)
        heapq.heappush(self._timers, (off_time, gen, key, gen))

    def _note_off(self, key: tuple[int, int], now: float, beat: float | None) -> None:
        entry = self.sounding.pop(key, None)
        if entry is None:
            return
        _, part, on_beat, off_beat = entry
        self._send(mido.Message("note_off", channel=key[0], note=key[1], velocity=0))
        self.guard.note_sent(time.perf_counter(), False, key[1])
        if part == "model":
            if beat is None or beat > off_beat:
                beat = off_beat
            if self.clock.running:
                beat = min(beat, max(on_beat, self.clock.beat_at(now)))
            self.session.note_off(max(beat, on_beat), "model", key[1], key[0])

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, key, gen = heapq.heappop(timers)
            entry = self.sounding.get(key)
            if entry is not None and entry[0] == gen:
                self._note_off(key, now, entry[3] if entry[3] >= 0 else None)

    def _release(self, part: str | None) -> None:
        now = time.perf_counter()
        for key, entry in list(self.sounding.items()):
            if part is None or entry[1] == part:
                self._note_off(key, now, None)

    def _all_notes_off(self) -> None:
        for channel in sorted(self.used_channels):
            self._send(mido.Message("control_change", channel=channel, control=123, value=0))

    def panic(self) -> None:
        """Note-off for everything sounding, then All Notes Off (CC 123) on every channel used."""
        try:
            self._release(None)
        finally:
            self._all_notes_off()

    # ------------------------------------------------------------------------------------------
    # Key lock

    def _set_key(self, key: str | None, scale: str) -> None:
        if key is None or key == "auto":
            return
        from lofi_live import sampling

        pc = sampling.parse_key(key)
        self.scale = sampling.parse_scale(scale)
        self._allowed = sampling.ScaleLock(self.model.vocabulary, pc, self.scale).mask
        self.key_name = sampling.key_name(pc, self.scale)

    def _key_mask(self):
        if not self._key_enabled:
            return None
        if self.key_setting == "auto":
            played = self.timeline.tokens()
            if self.timeline.count - self._key_checked >= 8 or self._allowed is None:
                from lofi_live import sampling

                self._key_checked = self.timeline.count
                if played:
                    pc, scale = sampling.detect_key(played[-64:])
                    name = sampling.key_name(pc, scale)
                    if name != self.key_name:
                        self._allowed = sampling.ScaleLock(self.model.vocabulary, pc, scale).mask
                        self.key_name = name
        return self._allowed

    # ------------------------------------------------------------------------------------------
    # Reporting

    def stats(self) -> dict[str, float]:
        latencies = errors = []
        for _ in range(5):
            try:
                latencies = list(self.worker.latencies) if self.worker else []
                errors = list(self.emission_errors)
                break
            except RuntimeError:  # changed while being copied from another thread
                continue
        return {
            "steps": self.step + 1,
            "played_steps": self.played_steps,
            "late_steps": self.late_steps,
            "latency_median_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
            "latency_p99_ms": _percentile(latencies, 99) * 1e3,
            "emission_median_ms": statistics.median(errors) * 1e3 if errors else 0.0,
            "emission_p99_ms": _percentile(errors, 99) * 1e3,
            "echoes_ignored": self.guard.ignored,
            "messages_in": self.messages_in,
        }

    def status_fields(self) -> dict[str, Any]:
        """The fields of lofi_live.view.EngineStatus (read from another thread: retried if racing)."""
        for _ in range(5):
            try:
                return self._status_fields()
            except RuntimeError:  # a deque changed while being copied
                continue
        return {}

    def _status_fields(self) -> dict[str, Any]:
        stats = self.stats()
        return dict(
            clock=self.clock.source,
            bpm=self.clock.bpm,
            running=self.clock.running,
            mode=self.mode,
            state=self.state,
            key=(self.key_name or "auto") if self._key_enabled else None,
            provider=getattr(self.model, "provider", "cpu"),
            model=getattr(self.model, "name", ""),
            response_bars=self.config.response_bars,
            loop=self.replay is not None and self.replay.kind == "loop",
            temperature=self.sampler.temperature,
            step_latency_ms=stats["latency_median_ms"],
            step_latency_p99_ms=stats["latency_p99_ms"],
            step=max(self.step, 0),
            late_steps=self.late_steps,
            recent=list(self.recent),
            last_tokens=self.timeline.tokens(last=8),
            cc_map=dict(self.controls.as_dict()) if hasattr(self.controls, "as_dict") else {},
        )


