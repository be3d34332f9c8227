"""A MIDI beat clock on JACK that delivers some ticks twice and loses others, on purpose, in its own
process (as a DAW or a USB interface would be), and says exactly what it sent.

    python tests/clock_sender.py NAME --bpm 90 --seconds 16 --log sent.json [--seed 1]

It opens a virtual output (the client ``NAME`` with the port ``NAME``), prints ``ready`` and waits for
``go`` on stdin (the test connects the port meanwhile). Then it sends Start and the ticks of a steady
clock, tick ``n`` at ``t0 + n * period`` (``time.perf_counter()``, the system's monotonic clock, which
every process reads alike), computed from the start so nothing drifts. In every block of 50 ticks
after the first beat, one tick is sent twice (the copy right after it) and another is not sent at
all, at places drawn with ``--seed``. At the end it sends Stop and writes ``--log``: ``t0``,
``period``, ``ticks`` (how many the clock had), the tick numbers ``duplicated`` and ``dropped``, and
``late``: ``(tick, seconds)`` for ticks this process sent more than a quarter period late (held up
by a busy machine).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import mido

#: Ticks per quarter note.
PPQN = 24
#: One tick in this many is duplicated, and one other is lost.
FAULT_BLOCK = 50
#: The first beat is sent clean (the receiver's follower locks on it).
CLEAN_TICKS = PPQN


def faults(ticks: int, seed: int) -> tuple[set[int], set[int]]:
    """The ticks sent twice and the ticks never sent: one of each in every block of 50 (distinct)."""
    rng = random.Random(seed)
    duplicated, dropped = set(), set()
    for block in range(CLEAN_TICKS, ticks - 1, FAULT_BLOCK):
        last = min(block + FAULT_BLOCK, ticks - 1)  # the last tick is always sent: its loss would not show
        if last - block < 2:
            break
        twice, never = rng.sample(range(block, last), 2)
        duplicated.add(twice)
        dropped.add(never)
    return duplicated, dropped


def _wait_until(when: float) -> None:
    """Sleep to 1 ms before ``when``, then spin: ticks leave within a fraction of a millisecond."""
    remaining = when - time.perf_counter() - 0.001
    if remaining > 0:
        time.sleep(remaining)
    while time.perf_counter() < when:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--bpm", type=float, default=90.0)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)
    port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output(args.name, virtual=True, client_name=args.name)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        port.close()
        return 1
    period = 60.0 / args.bpm / PPQN
    ticks = int(args.seconds / period)
    duplicated, dropped = faults(ticks, args.seed)
    clock = mido.Message("clock")
    t0 = time.perf_counter() + 0.1
    _wait_until(t0 - period / 2)
    port.send(mido.Message("start"))
    late = []  # (tick, seconds) sent more than a quarter period after it was due: this process was held up
    for n in range(ticks):
        _wait_until(t0 + n * period)
        if n in dropped:
            continue
        port.send(clock)
        behind = time.perf_counter() - (t0 + n * period)
        if behind > period / 4:
            late.append((n, round(behind, 4)))
        if n in duplicated:
            port.send(clock)
    _wait_until(t0 + ticks * period)
    port.send(mido.Message("stop"))
    time.sleep(0.1)
    port.close()
    with open(args.log, "w") as out:
        json.dump({"t0": t0, "period": period, "ticks": ticks,
                   "duplicated": sorted(duplicated), "dropped": sorted(dropped), "late": late}, out)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
