"""An rtmidi input read on a thread of ours, each message stamped with the time the MIDI system received it.

python-rtmidi calls a Python callback from the MIDI system's own thread (JACK: the client's process
thread), and that thread must first take Python's lock. While another thread holds it (a model step,
the engine thread's spin to a grid time), JACK's cycle waits; a late cycle is skipped, and the events
in it are lost or delivered twice. Measured over JACK's dummy server, with a thread that holds the lock
for 30 ms at a time: the callback received 312 of 400 events, a polled queue 392.

So the input is read as a queue: rtmidi's thread stores each message (no Python there) with its own
arrival time, and :class:`PolledInput`'s thread takes them out every :data:`POLL_SECONDS`. rtmidi's
times are deltas on the MIDI system's clock: messages read together keep the spacing they arrived
with (:func:`arrival_times`), so a burst read late does not look like ticks sent at once.

On JACK each message also gets the time it arrived by the server's sample clock (the frame time of
the process cycle it came in, in seconds), as its mido ``time``: the clock a DAW's MIDI clock ticks
are placed by. A stalled server delays every later cycle in wall time, so that a stall looks like a
lost tick by arrival time alone; by frame time nothing moved (:mod:`lofi_live.timing.tick_follower`).
Elsewhere ``time`` stays mido's 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable

from lofi_live.midi.ports import parse_message

log = logging.getLogger("lofi_live.midi.ports")

#: How long the reader sleeps when rtmidi's queue is empty (seconds): the most a message waits.
POLL_SECONDS = 0.0005
#: A stamp is never later than the one before plus rtmidi's delta to it and this (seconds): the reader
#: thread can be held up for tens of milliseconds (Python's lock, a busy machine), rtmidi's deltas are
#: JACK's cycle times; without the bound a lone tick read late looked like one after a lost tick.
DELTA_SLACK = 0.002
#: ``deliver(message, stamp)``: a parsed message (MalformedMessage for bad bytes) and its arrival time.
Deliver = Callable[[Any, float], None]
#: The start of the current JACK process cycle by the server's sample clock (seconds), None when unknown.
FrameClock = Callable[[], "float | None"]


def arrival_times(deltas: list[float], now: float) -> list[float]:
    """``perf_counter`` times for messages read together at ``now``, from rtmidi's deltas.

    The last one is stamped ``now`` (as a message read alone is: the reader looks every
    :data:`POLL_SECONDS`); each earlier one as much before it as the MIDI system received it. A burst
    held up on the way (a busy machine) so keeps its spacing: a MIDI clock tick that waited is not
    taken for one sent late. (The first delta, to a message of an earlier read, is not used.)"""
    times = [now]
    for delta in reversed(deltas[1:]):
        times.append(times[-1] - max(0.0, delta))
    return times[::-1]


def _bounded(stamp: float, last: float, since: float) -> float:
    """``stamp`` of a message that came ``since`` (rtmidi's deltas) after the one stamped ``last``: not
    before ``last``, and not later than ``since`` (and :data:`DELTA_SLACK`) after it."""
    if last == float("-inf"):
        return stamp
    return max(min(stamp, last + since + DELTA_SLACK), last)


class PolledInput:
    """A mido rtmidi input whose messages are taken from rtmidi's queue by a thread of this object.

    Closing it stops the thread before the port closes (rtmidi's queue must not be read while it is
    freed)."""

    def __init__(self, port: Any, deliver: Deliver, frames: FrameClock | None = None, name: str = "lofi-midi-in"):
        self.port = port
        self._deliver = deliver
        self._frames = frames
        self._stop = threading.Event()
        self._rt = port._rt  # every backend of lofi-live is rtmidi's
        self._rt.cancel_callback()  # from now on rtmidi queues what arrives
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        get, deliver, frames = self._rt.get_message, self._deliver, self._frames
        last = last_frame = float("-inf")  # stamps never go back: a message of this read after those of the last
        frame_room = 0.0  # rtmidi's deltas since the last message given a frame time
        while not self._stop.is_set():
            events = []
            try:
                while (event := get()) is not None:
                    events.append(event)
            except Exception as error:  # noqa: BLE001 - a port closed under us: nothing more to read
                log.debug("MIDI input read failed: %s", error)
                return
            if not events:
                time.sleep(POLL_SECONDS)
                continue
            deltas = [delta for _, delta in events]
            stamps = arrival_times(deltas, time.perf_counter())
            frame_now = frames() if frames is not None else None
            frame_stamps = arrival_times(deltas, frame_now) if frame_now is not None else [None] * len(events)
            for (data, delta), stamp, frame in zip(events, stamps, frame_stamps):
                # no later than the last stamp plus rtmidi's delta to it: a read held up stamps late
                last = stamp = _bounded(stamp, last, delta)
                frame_room += delta
                message = parse_message(data)
                if frame is not None and hasattr(message, "time"):
                    # the same for the sample clock, which moves no faster than JACK's own clock
                    last_frame = message.time = _bounded(frame, last_frame, frame_room)
                    frame_room = 0.0
                try:
                    deliver(message, stamp)
                except Exception:  # noqa: BLE001 - a failing receiver must not end the input
                    log.exception("MIDI input handler failed")

    def stop(self) -> None:
        """Stop reading (the port stays open)."""
        self._stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=1.0)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            self.port.close()
