"""A second Ableton Link peer for the tests, in its own process, as a DAW or a phone app would be.

    python tests/link_peer.py --bpm 93 [--start-stop]

It joins the session (with ``--start-stop``: start/stop sync on, transport playing) and then obeys
one command a line on stdin: ``tempo BPM``, ``stop``, ``start``, ``map``, ``quit``. After ``ready``
and after each command it prints one JSON line: its own beat -> time mapping at that moment, in
``time.perf_counter()`` seconds (the same clock in every process on the machine), so a test can tell
where the peer's beats fall:

    {"peers": 1, "tempo": 93.0, "playing": true, "at": T, "beat": B, "time": T0, "seconds_per_beat": S}

``beat`` is a bar line of the peer's timeline at ``time``; ``at`` is when the command took effect.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import link

QUANTUM = 4.0


def perf_offset(clock) -> float:
    """``perf_counter() - micros / 1e6``, from the tightest of a few bracketed readings."""
    best = (math.inf, 0.0)
    for _ in range(5):
        before = time.perf_counter()
        micros = clock.micros()
        after = time.perf_counter()
        best = min(best, (after - before, (before + after) / 2 - micros / 1e6))
    return best[1]


def report(session: link.Link, at_micros: int) -> None:
    offset = perf_offset(session.clock())
    state = session.captureAppSessionState()
    bar = math.floor(state.beatAtTime(at_micros, QUANTUM) / QUANTUM) * QUANTUM
    start, end = state.timeAtBeat(bar, QUANTUM), state.timeAtBeat(bar + 4 * QUANTUM, QUANTUM)
    print(json.dumps({
        "peers": session.numPeers(), "tempo": state.tempo(), "playing": state.isPlaying(),
        "at": at_micros / 1e6 + offset, "beat": bar, "time": start / 1e6 + offset,
        "seconds_per_beat": (end - start) / 1e6 / (4 * QUANTUM),
    }), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bpm", type=float, default=93.0)
    parser.add_argument("--start-stop", action="store_true", help="start/stop sync on, transport playing")
    args = parser.parse_args()
    session = link.Link(args.bpm)
    session.startStopSyncEnabled = args.start_stop
    session.enabled = True
    clock = session.clock()
    if args.start_stop:
        state = session.captureAppSessionState()
        state.setIsPlaying(True, clock.micros())
        session.commitAppSessionState(state)
    report(session, clock.micros())
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        now = clock.micros()
        if words[0] != "map":
            state = session.captureAppSessionState()
            if words[0] == "tempo":
                state.setTempo(float(words[1]), now)
            elif words[0] in ("start", "stop"):
                state.setIsPlaying(words[0] == "start", now)
            else:
                raise SystemExit(f"link_peer: unknown command {words[0]!r}")
            session.commitAppSessionState(state)
        report(session, now)
    session.enabled = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
