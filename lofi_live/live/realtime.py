"""Real-time scheduling priority for the threads that keep time, as audio software does.

A busy machine then never preempts the thread that holds Python's GIL near a grid boundary. Linux
with rtprio rights (``ulimit -r``) only; ``LOFI_LIVE_NO_REALTIME=1`` turns it off. ``lofi-live run``
asks for :data:`MAIN_PRIORITY` before it starts the MIDI and inference threads (they inherit it),
the engine thread for :data:`ENGINE_PRIORITY`, a little higher.
"""

from __future__ import annotations

import os

MAIN_PRIORITY = 5
ENGINE_PRIORITY = 10


def set_realtime(priority: int) -> bool:
    """SCHED_FIFO at ``priority`` for the calling thread (and the threads it starts from now on);
    False when the system does not allow it or it is turned off."""
    if os.environ.get("LOFI_LIVE_NO_REALTIME") or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, PermissionError):
        return False
