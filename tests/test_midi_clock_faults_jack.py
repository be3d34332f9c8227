"""`lofi-live run --clock midi` through real JACK ports, following a clock that duplicates 1 tick in 50
and loses 1 in 50 (tests/clock_sender.py, its own process), with the shipped ``lofi-seed`` model (a
strike nearly every step). A listener sees both the clock and the engine's notes.

Every gap between two onsets must be a whole number of 12-tick steps of the clock that was sent,
counted by time (the sender logs when each tick was due; the listener's view of the clock gives the
delivery latency), and the line `lofi-live run` prints when it stops reports the duplicates and the
lost ticks. Counting every byte, as the engine did before its tick follower, moves one onset in two
a tick off with these faults.

The dummy JACK server is no real-time server: on a loaded machine it now and then drops an event
(the engine then counts a lost tick more than were sent; one of its notes may not reach the
listener) or delivers one late, bunched with the next (read as a copy, then a lost tick: the count
stays right). So: a gap may be off a multiple of 12 by at most a quarter tick (7 ms at 90 BPM), one
gap in ten may miss that, the onsets of the last third of the run must sit where those of the first
third did on the sent grid (no slip), and the duplicates and lost ticks reported may exceed those
sent by up to 1 in 20 ticks. (The first tick after Start lost on the way cannot be noticed: every
onset is then one tick late, which no gap shows.) On a machine so busy that the sender itself is held up more than a tick at
more than three ticks, the clock it sent is not the one it logs, and the test skips.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jack_helpers import ROOT, Listener, connect, engine_ports, onset_times, unique, wait_for_ports
from lofi_live.midi.files import NoteEvent, write_midi

pytestmark = [pytest.mark.jack, pytest.mark.slow]

MODEL = ROOT / "exported_models" / "lofi-seed.json"
BPM = 90
SECONDS = 16.0
#: A gap may be off a whole number of steps by this much (ticks), ...
TOLERANCE_TICKS = 0.25
#: ... except this share of the gaps (the dummy server drops or delays an event now and then).
OUTLIERS = 0.1
#: A sender held up (by the machine) more than a tick at more ticks than this sent another clock than
#: the one it logs: the run is skipped.
SENDER_HELD_UP = 3


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=10)


def test_duplicated_and_lost_ticks_move_no_onset_off_the_senders_grid_and_are_reported(jack_server, tmp_path):
    seed = write_midi(tmp_path / "seed.mid", [("seed", [NoteEvent(i * 0.5, 0.45, p) for i, p in
                                                        enumerate([60, 62, 64, 67, 69, 67, 64, 62])])], bpm=BPM)
    name = unique("LoFi Clock")
    engine_in, engine_out = engine_ports(name)
    engine = subprocess.Popen(
        [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--model", str(MODEL), "--name", name,
         "--clock", "midi", "--seed-midi", str(seed), "--response-bars", "64", "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender_name = unique("lofi-clock")
    log = tmp_path / "sent.json"
    sender = subprocess.Popen([sys.executable, str(Path(__file__).with_name("clock_sender.py")), sender_name,
                               "--bpm", str(BPM), "--seconds", str(SECONDS), "--log", str(log)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    listener = None
    try:
        wait_for_ports([engine_in, engine_out], proc=engine)
        assert sender.stdout.readline().strip() == "ready"
        listener = Listener(jack_server)
        sender_port = f"{sender_name}:{sender_name}"
        wait_for_ports([sender_port])
        for source, destination in ((sender_port, engine_in), (sender_port, listener.jack_name),
                                    (engine_out, listener.jack_name)):
            connect(source, destination)
        time.sleep(0.3)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        assert sender.stdout.readline().strip() == "done"
        sender.wait(timeout=10)
        time.sleep(0.2)
    finally:
        out, err = _stop(engine)
        if sender.poll() is None:
            sender.kill()
        events = listener.snapshot() if listener else []
        if listener:
            listener.close()
    assert engine.returncode == 0, (engine.returncode, out[-2000:], err[-2000:])
    sent = json.loads(log.read_text())
    t0, period = sent["t0"], sent["period"]
    held_up = [n for n, seconds in sent["late"] if seconds > period]
    if len(held_up) > SENDER_HELD_UP:  # then the clock sent was not the one intended: nothing to judge
        pytest.skip(f"the machine is too busy: the clock sender was held up over a tick at {len(held_up)} "
                    f"ticks ({sent['late']})")

    # the listener saw the clock as sent (copies and gaps included): its delivery latency
    ticks = [t for t, m in events if m.type == "clock"]
    assert len(ticks) > 0.9 * sent["ticks"]
    latency = statistics.median((t - t0) / period - round((t - t0) / period) for t in ticks) * period
    onsets = onset_times(events, channel=0)
    assert len(onsets) >= 31, (len(onsets), out, err)
    position = [(t - latency - t0) / period for t in onsets]  # in ticks of the sent clock
    gaps = [b - a for a, b in zip(position, position[1:])]
    off = [abs(gap - 12 * round(gap / 12)) for gap in gaps]
    phases = [p - 12 * round(p / 12) for p in position]
    print(f"\n{len(onsets)} onsets; the clock sent {sent['ticks']} ticks, {len(sent['duplicated'])} twice, "
          f"{len(sent['dropped'])} never; the listener got {len(ticks)}; delivery latency {latency * 1e3:.2f} ms; "
          f"ticks the sender sent over a quarter period late: {sent['late']}")
    print(f"onset gaps off a multiple of 12 ticks: median {statistics.median(off):.3f}, max {max(off):.3f} ticks; "
          f"onset phase against the sent grid: {min(phases):+.2f}..{max(phases):+.2f} ticks")
    assert sum(each > TOLERANCE_TICKS for each in off) <= OUTLIERS * len(off), \
        ([round(gap, 2) for gap in gaps], [round(p, 2) for p in phases])
    # no slip: the onsets of the last third sit where those of the first third did on the sent grid
    third = len(phases) // 3
    assert abs(statistics.median(phases[-third:]) - statistics.median(phases[:third])) < TOLERANCE_TICKS, phases
    assert all(round(gap / 12) >= 1 for gap in gaps)

    found = re.search(r"MIDI clock: (\d+) duplicate ticks ignored, (\d+) lost ticks counted", out)
    assert found, out
    duplicates, lost = int(found.group(1)), int(found.group(2))
    print(f"stop line: {found.group(0)} (sent: {len(sent['duplicated'])} duplicated, {len(sent['dropped'])} dropped)")
    # at least what was sent (a copy the server dropped excepted); more where the server lost ticks of
    # its own, or held one back and delivered it together with the next (read as a copy, then the
    # tick after as following a lost one: the count stays right)
    margin = sent["ticks"] // 20
    assert len(sent["duplicated"]) - 1 <= duplicates <= len(sent["duplicated"]) + margin
    assert len(sent["dropped"]) <= lost <= len(sent["dropped"]) + margin
