"""Faults of the ports' own machinery that must be seen, not hidden: stderr swapped by one thread at a
time, and a port watcher that fails said once at WARNING and retried with backoff."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from jack_helpers import unique
from lofi_live.midi.live_ports import MidiPorts
from lofi_live.midi.ports import quiet_stderr


def test_overlapping_quiet_stderr_from_two_threads_leaves_stderr_where_it_was():
    """Thread A swaps descriptor 2, thread B asks while A still has it and keeps it longer: B must not
    save A's sink as "the original" (it would restore it last and leave stderr redirected for good)."""
    before = os.fstat(2)
    a_in = threading.Event()
    inside: list[str] = []
    most_inside = []

    def use(name: str, hold: float, first: threading.Event | None) -> None:
        if first is not None:
            first.wait(5)
        with quiet_stderr():
            inside.append(name)
            most_inside.append(len(inside))
            if first is None:
                a_in.set()
            time.sleep(hold)
            inside.remove(name)

    a = threading.Thread(target=use, args=("a", 0.2, None))
    b = threading.Thread(target=use, args=("b", 0.4, a_in))
    a.start()
    b.start()
    a.join(5)
    b.join(5)
    assert max(most_inside) == 1  # never swapped by two threads at once
    assert os.path.samestat(os.fstat(2), before)  # stderr is where it was


def test_quiet_stderr_nests_on_one_thread():
    before = os.fstat(2)
    with quiet_stderr():
        with quiet_stderr():
            pass
        assert not os.path.samestat(os.fstat(2), before)  # still quiet inside the outer one
    assert os.path.samestat(os.fstat(2), before)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.jack
def test_a_failing_port_watcher_is_said_once_at_warning_and_retried_with_backoff(jack_server):
    logger = logging.getLogger("lofi_live.midi.ports")
    lines = _Lines()
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    ports = MidiPorts("jack", lambda message, stamp: None, name=unique("LoFi Watch"), poll_seconds=0.05)
    calls: list[float] = []
    alive = ports._monitor.alive

    def failing() -> bool:
        calls.append(time.perf_counter())
        raise RuntimeError("the MIDI system answered oddly")

    try:
        ports._monitor.alive = failing
        time.sleep(1.6)
        warnings = [r for r in lines.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "port watcher failed" in warnings[0].getMessage()
        assert "the MIDI system answered oddly" in warnings[0].getMessage()
        # backoff: 0.1, 0.2, 0.4, 0.8 s ... after the failures, not one try every 0.05 s (about 32)
        assert 2 <= len(calls) <= 6, len(calls)
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        assert all(later > earlier for earlier, later in zip(gaps, gaps[1:]))
        ports._monitor.alive = alive
        deadline = time.perf_counter() + 4
        while time.perf_counter() < deadline and len([r for r in lines.records if r.levelno >= logging.WARNING]) < 2:
            time.sleep(0.05)
        assert "works again" in [r for r in lines.records if r.levelno >= logging.WARNING][-1].getMessage()
        assert ports.system_up
    finally:
        ports._monitor.alive = alive
        ports.close()
        logger.removeHandler(lines)
        logger.setLevel(level)
