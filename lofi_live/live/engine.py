"""The live engine's thread: the loop, the life cycle, and the entry points other threads may call.

What happens to the engine's parts, one event at a time, is :class:`lofi_live.live.core.EngineCore`
(the parts and how they are wired are listed there and in ``docs/LIVE_ENGINE.md``).

Threads
    * the MIDI input thread only calls :meth:`Engine.on_message` (queue with its arrival time); any
      other thread (the port watcher, a web surface) only calls :meth:`Engine.on_port_event` and
      :meth:`Engine.control`, which queue too, and :meth:`Engine.snapshot`;
    * the engine thread (:meth:`Engine._loop`) owns every part: it reads the queue, keeps the clock,
      tokenizes played notes, decides what the model plays, sends every output message, times
      note-offs, records the session and publishes an immutable :class:`EngineStatus` for the view;
    * the inference thread computes the next token ahead of time; changes to the sampler reach it
      as messages;
    * once the engine thread has ended, its figures (:meth:`Engine.stats`) may be read; a thread that
      did not end is never reached into (:meth:`Engine.panic` and :meth:`Engine.stats` refuse).

Grid
    Grid times come from the clock's beat-to-time mapping (:mod:`lofi_live.live.scheduler`), never
    from adding intervals: nothing drifts. The engine thread sleeps until ~1.5 ms before a boundary,
    then spins, so onsets leave within a fraction of a millisecond of the ideal grid time.

Faults
    Only the decoding of a MIDI message may be treated as bad input (:mod:`lofi_live.live.intake`). A
    fault in the engine's own logic (a stepper or a sampler that raises, on any clock) ends the loop:
    every sounding note gets its note-off, All Notes Off goes to every channel used, ``error`` holds
    the cause and ``lofi-live run`` says it in one line and exits non-zero. The MIDI system or a
    port going away is no fault of the engine's: it holds and goes on (:mod:`lofi_live.live.outage`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

import mido

from lofi_live.live.config import EngineConfig
from lofi_live.live.core import EngineCore
from lofi_live.live.intake import Control
from lofi_live.live.realtime import ENGINE_PRIORITY, set_realtime
from lofi_live.live.view import EngineStatus
from lofi_live.midi.port_watch import PortEvent

__all__ = ["Engine", "EngineConfig", "EngineStatus"]

#: Longest sleep of the engine loop, so closed steps and timers are seen promptly.
MAX_WAIT = 0.02
#: The view's snapshot is published at least this often (seconds) between boundaries.
PUBLISH_SECONDS = 0.05


class Engine(EngineCore):
    """The live engine. ``start()`` runs it on its own thread; ``stop()`` ends it with no note left on."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.rt_priority = False

    def on_message(self, message: mido.Message, stamp: float | None = None) -> None:
        """The input port's callback (MIDI input thread): queue, nothing else. ``stamp``: when the
        MIDI system received it (``time.perf_counter``), now if not given."""
        self.intake.on_message(message, stamp)

    def on_port_event(self, event: PortEvent) -> None:
        """The port watcher's callback: queued with the input, so it is handled in order with the notes."""
        self.intake.put(event)

    def control(self, action: Any) -> None:
        """Apply a :class:`lofi_live.live.controls.Action` from any thread: queued with the input and
        applied by the engine thread in order, as a mapped control change is."""
        self.intake.put(Control(time.perf_counter(), (action,)))

    # ------------------------------------------------------------------------------------------
    # Life cycle

    def prime(self, tokens: Sequence[str]) -> int:
        """Fill the window from seed tokens (before start); the model then responds at once."""
        return self.responder.prime(tokens)

    def start_worker(self) -> None:
        """Start the inference thread; from now on it alone touches the sampler."""
        self.responder.start_worker()

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
        """Note-off for everything sounding, then All Notes Off (CC 123) on every channel used.

        The engine thread's: from another thread only while it does not run (it does this itself
        when it ends)."""
        if self.running and threading.current_thread() is not self._thread:
            raise RuntimeError("Engine.panic() from another thread while the engine thread runs")
        self.voices.panic()

    def _main(self) -> None:
        try:
            if self.config.realtime:
                self.rt_priority = set_realtime(ENGINE_PRIORITY)
            self._loop()
        except BaseException as error:  # noqa: BLE001 - the caller reports it, after the panic below
            self.error = error
        finally:
            try:
                self.voices.panic()
            finally:
                self.responder.stop_worker()
                self._ended = True
                self._publish()
                self.finished.set()

    # ------------------------------------------------------------------------------------------
    # The loop

    def _loop(self) -> None:
        cfg, scheduler = self.config, self.scheduler
        if scheduler.ahead:  # the grid is known ahead: internal clock, Link
            self.plan(scheduler.start(time.perf_counter() + cfg.start_delay))
        while not self._stopping.is_set():
            now = time.perf_counter()
            emit_at = scheduler.emit_at()
            deadline = now + MAX_WAIT
            if emit_at is not None:
                deadline = min(deadline, emit_at - cfg.spin)
            timer = self.voices.next_timer()
            if timer is not None:
                deadline = min(deadline, timer)
            self._drain(deadline)
            now = time.perf_counter()
            if scheduler.ahead:  # Link: the session's tempo, phase and start/stop
                self._carry(scheduler.follow(self.clock.poll(now)))
            self.voices.run_timers(now)
            self.close_steps(now)
            emit_at = scheduler.emit_at()  # again: a tempo control may have moved the grid meanwhile
            if emit_at is not None and now >= emit_at - cfg.spin:
                while time.perf_counter() < emit_at:
                    pass
                if scheduler.held_by_server(emit_at):
                    continue
                self.boundary(scheduler.due(), emit_at)
            elif now - self._published > PUBLISH_SECONDS and (emit_at is None or emit_at - now > 0.005):
                self._publish()

    def _drain(self, deadline: float) -> None:
        """Handle queued input until ``deadline`` (sleeping on the queue when it is empty)."""
        for stamp, message in self.intake.receive(deadline):
            self._handle(message, stamp, time.perf_counter())
            emit_at = self.scheduler.emit_at()
            if emit_at is not None and emit_at - self.config.spin < deadline:
                return  # a boundary came due sooner (the MIDI clock announced one ahead): the loop waits for it

    def snapshot(self) -> EngineStatus:
        """The engine's latest published status (safe from any thread: it is never changed)."""
        return self.status

    def stats(self) -> dict[str, float]:
        """Figures of the whole run, for the line printed at exit; only once the engine thread has
        ended (they are its state)."""
        if self.running:
            raise RuntimeError("Engine.stats() while the engine thread runs")
        return {"steps": self.scheduler.step + 1, **self.responder.figures(),
                "echoes_ignored": self.intake.guard.ignored, "messages_in": self.intake.messages_in,
                # --clock midi: ticks delivered twice and ticks lost on the way in (lofi_live.timing.tick_follower)
                "clock_duplicates": getattr(self.clock, "duplicates", 0), "clock_lost": getattr(self.clock, "lost", 0)}
