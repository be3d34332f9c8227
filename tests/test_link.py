"""Ableton Link (``--clock link``) against a second Link peer in another process (tests/link_peer.py).

Link finds peers over the network interfaces, loopback included, so two processes on this machine
form a session as a laptop and a phone would. The peer reports its own beat -> time mapping; the
engine's onsets, received through real JACK ports, are measured against it. Every wait is for an
event (a peer seen, onsets arrived, notes ended) with a deadline, so a loaded machine only makes
the test slower.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import JACK_BACKEND
from jack_helpers import (
    ROOT,
    Listener,
    connect,
    engine_command,
    engine_ports,
    note_ons,
    onset_times,
    percentile,
    still_sounding,
    unique,
    wait_for_ports,
)

PEER = Path(__file__).resolve().parent / "link_peer.py"
#: MIDI channels (0-based) of the model and the metronome in the engine test.
MODEL_CHANNEL, METRONOME_CHANNEL = 0, 9
METRONOME_ACCENT = 76  # lofi_live.live.voices: the click on a bar line
#: Onsets measured at each tempo: enough for a p99 that is not simply the worst one.
ONSETS = 64
#: Frames per period of the real-time timing server (48 kHz): 0.67 ms, a studio's low-latency setting.
#: MIDI between JACK clients moves once a period, so every arrival is late by up to one period.
TIMED_PERIOD = 32


class Peer:
    """``tests/link_peer.py`` as a subprocess: commands in, its mapping (one JSON line each) out."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(PEER), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._answer()  # the first mapping: the peer is up

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def _answer(self, timeout: float = 20.0) -> dict:
        try:
            return json.loads(self.lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"the Link peer did not answer: {self.proc.poll()} {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def send(self, command: str) -> dict:
        """Run ``command`` in the peer; its mapping right after it."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def wait_for_peers(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            mapping = self.send("map")
            if mapping["peers"] >= 1:
                return mapping
            assert time.monotonic() < deadline, "the Link peer never saw the engine's Link"
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def peers():
    """Link peer processes, each closed at the end (skips without the Link binding, the [link] extra)."""
    pytest.importorskip("link", reason="the Link binding is the [link] extra: pip install -e '.[link]'")
    made: list[Peer] = []

    def make(*args: str) -> Peer:
        peer = Peer(*args)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def peer_beat(mapping: dict, when: float) -> float:
    """The peer's beat at ``when`` (perf_counter seconds) by its own mapping."""
    return mapping["beat"] + (when - mapping["time"]) / mapping["seconds_per_beat"]


def grid_error(mapping: dict, when: float, grid: float = 0.5) -> float:
    """Signed seconds from ``when`` to the nearest step of the peer's ``grid``-beat grid."""
    beats = peer_beat(mapping, when)
    return (beats - round(beats / grid) * grid) * mapping["seconds_per_beat"]


def realtime_allowed() -> bool:
    """Whether this process may use real-time scheduling (Linux with rtprio rights, e.g. root)."""
    try:
        saved = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    except (AttributeError, OSError):
        return False
    os.sched_setscheduler(0, saved[0], saved[1])
    return True


def realtime_listener(backend: str) -> Listener:
    """A listener whose JACK threads run at a low real-time priority where allowed, as the engine's do
    (``lofi_live.commands.run``): on a busy machine its arrival stamps then measure the JACK server, not the
    scheduler's queue. Threads inherit the policy of the thread that starts them."""
    if not realtime_allowed():
        return Listener(backend)
    saved = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    try:
        return Listener(backend)
    finally:
        os.sched_setscheduler(0, saved[0], saved[1])


@pytest.fixture
def timed_jack(request, monkeypatch) -> Iterator[tuple[str, bool]]:
    """A JACK server for timing: ``(mido backend, real_time)``.

    Where real-time scheduling is allowed, a dummy-driver server of this test's own, running real-time
    with a short period (``TIMED_PERIOD``) as a studio's does (a server that is not real-time delivers
    late on a busy machine, which no engine can make up for): ``JACK_DEFAULT_SERVER`` points this
    process, the engine and the JACK tools to it, and it is stopped by its PID at the end. Elsewhere,
    the shared test server."""
    if not realtime_allowed() or not (shutil.which("jackd") and shutil.which("jack_wait")):
        yield request.getfixturevalue("jack_server"), False
        return
    name = f"lofi-link-{os.getpid()}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    server = subprocess.Popen(["jackd", "-n", name, "-R", "-P", "70", "-d", "dummy", "-r", "48000", "-p", str(TIMED_PERIOD)],
                              env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["jack_wait", "-c"], capture_output=True, text=True).stdout.strip() != "running":
            assert server.poll() is None and time.monotonic() < deadline, "the real-time JACK server did not start"
            time.sleep(0.1)
        yield JACK_BACKEND, True
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_clock_link_without_the_binding_is_one_line_and_exit_2(tmp_path):
    """Without the [link] extra, ``--clock link`` says which extra to install (and loads nothing)."""
    hide = "import sys; sys.modules['link'] = None; from lofi_live.cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", hide, "run", "--clock", "link", "--model", str(tmp_path / "none.onnx")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "lofi-live[link]" in result.stderr, result.stderr


@pytest.mark.slow
def test_link_clock_keeps_the_peers_bar_phase_and_tempo_and_its_start_stop(peers):
    """The clock alone, in this process, against a peer process: grid times on the peer's mapping to
    well under a millisecond, bar lines on its bar lines (quantum 4), tempo changes either way,
    start/stop."""
    from lofi_live.timing.link import LinkClock

    clock = LinkClock(120.0)
    peer = peers("--bpm", "93", "--start-stop")
    peer.wait_for_peers()

    def settled(check, timeout: float = 10.0):
        """Poll the clock until ``check(event)`` holds; the events seen meanwhile."""
        events, deadline = [], time.monotonic() + timeout
        while True:
            event = clock.poll(time.perf_counter())
            if event is not None:
                events.append(event)
            if check(events):
                return events
            assert time.monotonic() < deadline, (clock.timeline, events)
            time.sleep(0.01)

    def phase_errors(mapping: dict) -> list[float]:
        """Seconds between each of the next 16 engine beats and the same beat of the peer's bars."""
        errors = []
        first = math.ceil(clock.beat_at(time.perf_counter()))
        for beat in range(first, first + 16):
            when = clock.time_of_beat(beat)
            offset = (peer_beat(mapping, when) - beat) % 4.0  # the same bar phase: a multiple of 4 beats
            errors.append(min(offset, 4.0 - offset) * mapping["seconds_per_beat"])
        return errors

    mapping = peer.send("tempo 93")  # whichever session won when the two met, the peer now says 93
    settled(lambda events: abs(clock.bpm - 93.0) < 0.01)
    clock.start(time.perf_counter())
    assert clock.running and clock.peers == 1
    assert max(phase_errors(mapping)) < 0.0002, phase_errors(mapping)

    mapping = peer.send("tempo 100")
    settled(lambda events: abs(clock.bpm - 100.0) < 0.01)
    assert abs(clock.seconds_per_beat - 0.6) < 1e-4
    assert max(phase_errors(mapping)) < 0.0002, phase_errors(mapping)

    # our own tempo is proposed to the session: the peer follows
    clock.set_bpm(96.0, time.perf_counter())
    deadline = time.monotonic() + 10
    while abs(peer.send("map")["tempo"] - 96.0) > 0.01:
        assert time.monotonic() < deadline, "the peer did not take the proposed tempo"
        time.sleep(0.05)
    assert max(phase_errors(peer.send("map"))) < 0.0002

    peer.send("stop")
    stop = settled(lambda events: bool(events))
    assert [event.kind for event in stop] == ["stop"] and not clock.running
    mapping = peer.send("start")
    start = settled(lambda events: bool(events))
    assert [event.kind for event in start] == ["start"] and clock.running
    # play again from the first grid step still ahead of the moment the start was seen
    assert clock.time_of_beat(start[0].step * 0.5) >= start[0].time
    assert clock.time_of_beat(start[0].step * 0.5) - start[0].time < 0.5 * clock.seconds_per_beat + 0.011
    assert max(phase_errors(mapping)) < 0.0002


@pytest.mark.jack
@pytest.mark.slow
def test_engine_plays_on_a_link_peers_grid_follows_its_tempo_and_stops_with_it(peers, timed_jack, tmp_path):
    """``lofi-live run --clock link`` with a peer at 93 then 100 BPM: onsets through JACK on the peer's
    0.5-beat grid (median within 2 ms, and the engine's own sends'; the p99 figures printed), bar lines
    on its bar lines; the peer stopping stops the engine with no note left
    sounding, and starting plays again."""
    from model_fixtures import build_model

    from lofi_live.midi.files import NoteEvent, write_midi

    model = build_model(tmp_path / "model")
    seed = write_midi(tmp_path / "seed.mid", [("seed", [NoteEvent(i * 0.5, 0.45, p) for i, p in enumerate([60, 62, 64, 67])])], bpm=90)
    peer = peers("--bpm", "93", "--start-stop")
    # the listener's reading thread and the engine's: hand them the GIL within 0.5 ms
    saved_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    name = unique("LoFi Link")
    _, engine_out = engine_ports(name)
    backend, real_time = timed_jack
    listener = realtime_listener(backend)
    proc = subprocess.Popen(
        engine_command(model, name, "--clock", "link", "--bpm", "120", "--metronome", "10", "--seed-midi", str(seed),
                       "--response-bars", "64", "--seed", "1"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    def received(start: float, end: float = math.inf) -> list:
        """What the listener received in [start, end): (perf_counter time, message)."""
        return [(t, m) for t, m in listener.snapshot() if start <= t < end]

    try:
        wait_for_ports([engine_out], proc=proc)
        connect(engine_out, listener.jack_name)
        peer.wait_for_peers()

        def wait_for_onsets(start: float, count: int, timeout: float = 90.0) -> None:
            deadline = time.monotonic() + timeout
            while len(onset_times(received(start))) < count:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"fewer than {count} onsets after {start}: {received(start)}"
                time.sleep(0.2)

        at_93 = peer.send("tempo 93")
        wait_for_onsets(at_93["at"], ONSETS)
        at_100 = peer.send("tempo 100")
        wait_for_onsets(at_100["at"], ONSETS)
        stopped = peer.send("stop")
        # stop: the engine's notes end; nothing more starts
        deadline = time.monotonic() + 10
        while still_sounding(listener.snapshot()) and time.monotonic() < deadline:
            time.sleep(0.05)
        quiet_since = time.perf_counter()
        time.sleep(2 * 0.6)  # two beats at 100 BPM: a running engine would click twice
        after_stop = note_ons(received(stopped["at"] + 0.05))
        sounding = still_sounding(listener.snapshot())
        started = peer.send("start")
        wait_for_onsets(started["at"], 8, timeout=30.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        listener.close()
        sys.setswitchinterval(saved_interval)

    assert sounding == [] and after_stop == [], (sounding, after_stop, quiet_since)
    figures = {}
    for label, mapping, start, end in (
        ("93 BPM", at_93, at_93["at"], at_100["at"]),
        ("100 BPM", at_100, at_100["at"], stopped["at"]),
        ("after start", started, started["at"], math.inf),
    ):
        events = received(start, end)
        # one onset is one arrival (a chord and a click on the same step arrive together)
        errors = [abs(grid_error(mapping, t)) for t in onset_times(events)]
        figures[label] = (len(errors), statistics.median(errors) * 1e3, percentile(errors, 99) * 1e3)
        # bar lines on the peer's bar lines: the accented click is on its beat 0 of 4, the others on 1..3
        for t, message in note_ons(events, METRONOME_CHANNEL):
            beat = round(peer_beat(mapping, t)) % 4
            assert (beat == 0) == (message.note == METRONOME_ACCENT), (label, t, message, peer_beat(mapping, t))
        assert note_ons(events, MODEL_CHANNEL), (label, events)
    print("\nLink via JACK, onsets against the peer's 0.5-beat grid: " + "; ".join(
        f"{label}: {n} onsets, median {median:.2f} ms, p99 {p99:.2f} ms" for label, (n, median, p99) in figures.items()))
    # The engine's own send times against the grid it computed from Link (the clock test above shows
    # that grid is the peer's to well under a millisecond): the median within 2 ms. The p99 target
    # (2 ms) is benchmarks/live_bench.py's to measure: over a test's steps on a loaded shared machine
    # one late wake-up is the p99 (4.3 ms in one run), so here it only guards against a broken
    # scheduler (tens of ms), as in test_engine_jack.
    found = re.search(r"emission error median ([0-9.]+) ms, p99 ([0-9.]+) ms", out)
    assert found, out
    print(f"engine send error median {found.group(1)} ms, p99 {found.group(2)} ms")
    assert float(found.group(1)) < 2.0 and float(found.group(2)) < 20.0, out
    # What the listener receives also carries JACK's delivery: up to one period (0.67 ms on the
    # real-time server, 1.33 ms on the shared one), and more whenever the shared host holds the server
    # up: on a real-time server here the larger of the two sections' p99 was 1.7 to 4.9 ms over 7 runs.
    # So the median holds to 2 ms and the p99 to what a working scheduler gives (10 ms); the figures
    # are printed.
    print(f"JACK server {'real-time' if real_time else 'not real-time'}")
    for label, (count, median, p99) in figures.items():
        assert count >= (ONSETS if label != "after start" else 8), (label, figures)
        assert median <= 2.0, (label, figures)
        if label != "after start":  # 8 onsets: too few for a p99
            assert p99 <= 10.0, (label, figures)
