"""The live engine through real JACK MIDI ports: `lofi-live run` as a subprocess, played from another client.

Each test starts ``lofi-live run --backend jack`` with a tiny exported model (tests/model_fixtures.py)
under a unique port name, plays into its input from a virtual output, and listens to its output
from a virtual input. Timing assertions carry margins for a loaded 2-core machine; the precise
figures come from ``benchmarks/live_bench.py`` and are printed here (``pytest -s``/``-rA``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import mido
import pytest

from jack_helpers import (
    ROOT,
    Listener,
    Player,
    all_notes_off_channels,
    connect,
    engine_command,
    engine_ports,
    grid_errors,
    grid_errors_fit,
    onset_times,
    percentile,
    unique,
    still_sounding,
    unmatched_note_ons,
    wait_for_ports,
)
from lofi_live.midifile import NoteEvent, write_midi

pytestmark = [pytest.mark.jack, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from model_fixtures import build_model

    return build_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def seed_midi(tmp_path_factory) -> Path:
    notes = [NoteEvent(i * 0.5, 0.45, p) for i, p in enumerate([60, 62, 64, 67, 69, 67, 64, 62])]
    return write_midi(tmp_path_factory.mktemp("seed") / "seed.mid", [("seed", notes)], bpm=90)


class Engine:
    """A ``lofi-live run`` subprocess with its port names; always stopped at teardown."""

    def __init__(self, model: Path, *args: str, env: dict | None = None):
        self.name = unique("LoFi Test")
        self.input, self.output = engine_ports(self.name)
        self.proc = subprocess.Popen(
            engine_command(model, self.name, *args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, **(env or {})),
        )
        wait_for_ports([self.input, self.output], proc=self.proc)
        self.out = self.err = ""

    def interrupt(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        self.out, self.err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


@pytest.fixture
def clients(jack_server):
    made = []

    def make(kind):
        client = (Listener if kind == "listen" else Player)(jack_server)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def engines():
    made: list[Engine] = []

    def make(*args, **kwargs):
        engine = Engine(*args, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.kill()


def test_run_answers_on_the_grid_records_both_parts_and_ctrl_c_leaves_nothing_sounding(
    tiny_model, engines, clients, tmp_path, jack_server
):
    record = tmp_path / "s.mid"
    engine = engines(tiny_model, "--bpm", "120", "--record", str(record), "--response-bars", "2", "--seed", "1")
    listener, player = clients("listen"), clients("play")
    connect(engine.output, listener.jack_name)
    connect(player.jack_name, engine.input)
    time.sleep(0.2)
    player.play_phrase([60, 62, 64, 65, 67, 69, 71, 72], interval=0.25, length=0.2)
    # 2 beats of silence (1 s), then 2 bars = 16 steps of answer (4 s); stop in the middle of it. A
    # note-off lost by a loaded JACK server holds the phrase open until the 8-beat note guard (4 s),
    # so wait for the answer's first notes rather than a fixed time.
    deadline = time.monotonic() + 8.0
    while len(onset_times(listener.snapshot(), channel=0)) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert engine.interrupt() == 0, engine.err
    time.sleep(0.1)
    events = listener.snapshot()

    times = onset_times(events, channel=0)
    assert len(times) >= 6, (events, engine.out, engine.err)
    errors = grid_errors(times, 0.25)
    fitted = grid_errors_fit(times, 0.25)
    print(f"\n120 BPM via JACK: {len(times)} onsets, grid error median {statistics.median(errors) * 1e3:.2f} ms, "
          f"p99 {percentile(errors, 99) * 1e3:.2f} ms (best phase: p99 {percentile(fitted, 99) * 1e3:.2f} ms)")
    # The engine's own send times against the ideal grid (printed by `lofi-live run` at exit): issue 3
    # asks p99 < 2 ms, which benchmarks/live_bench.py measures (0.35 ms); over the ~16 steps of a test
    # on a loaded shared machine one late wake-up is the p99, so the test only guards against a broken
    # scheduler (tens of ms) and drift.
    found = re.search(r"emission error median ([0-9.]+) ms, p99 ([0-9.]+) ms", engine.out)
    assert found, engine.out
    sent_median, sent_p99 = float(found.group(1)), float(found.group(2))
    print(f"engine send error median {sent_median:.3f} ms, p99 {sent_p99:.3f} ms")
    assert sent_p99 < 20.0
    # What the listener sees also carries the JACK server's delivery jitter (the dummy driver is not
    # real-time here and xruns under load), so only a loose bound holds there.
    assert statistics.median(fitted) < 0.010
    assert max(fitted) < 0.100
    # every note-on has its note-off (a message JACK dropped in an xrun excepted: at most one),
    # and Ctrl-C sent All Notes Off on the model's channel, so nothing is left sounding
    print(f"note-ons without note-off at the listener: {len(unmatched_note_ons(events))} (JACK drops)")
    assert 0 in all_notes_off_channels(events)
    assert still_sounding(events) == []
    # the recording holds both parts
    assert "wrote" in engine.out and "journal" in engine.out and "provider" in engine.out.lower()
    midi = mido.MidiFile(record)
    tracks = {track.name: [m for m in track if m.type == "note_on" and m.velocity > 0] for track in midi.tracks}
    # all 8 played notes (JACK may drop one message in an xrun on a loaded machine)
    assert len(tracks["player"]) >= 7, (tracks["player"], engine.err, engine.out)
    assert {m.note for m in tracks["player"]} <= {60, 62, 64, 65, 67, 69, 71, 72}
    assert len(tracks["model"]) >= len(times)


def _transport(command: str) -> None:
    subprocess.run(["jack_transport"], input=command + "\nquit\n", capture_output=True, text=True, timeout=10)


@pytest.mark.skipif(shutil.which("jack_midi_clock") is None or shutil.which("jack_transport") is None,
                    reason="jack_midi_clock (jack-midi-clock) or jack_transport (jackd2) not installed")
def test_midi_clock_from_jack_midi_clock_at_90_bpm_stop_and_continue(tiny_model, seed_midi, engines, clients, jack_server):
    engine = engines(tiny_model, "--clock", "midi", "--seed-midi", str(seed_midi), "--response-bars", "32", "--quiet")
    listener = clients("listen")
    connect(engine.output, listener.jack_name)
    _transport("stop")
    _transport("locate 0")
    before = set(subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n"))
    clock = subprocess.Popen(["jack_midi_clock", "-b", "90", "-B", engine.input, listener.jack_name],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (set(subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")) - before):
            assert time.monotonic() < deadline, "jack_midi_clock did not start"
            time.sleep(0.05)
        time.sleep(0.3)
        _transport("play")
        time.sleep(2.5)
        _transport("stop")
        stopped_at = time.perf_counter()
        time.sleep(1.5)
        _transport("play")  # a continue from where it stopped
        time.sleep(2.0)
        _transport("stop")
        time.sleep(0.3)
    finally:
        clock.send_signal(signal.SIGINT)
        try:
            clock.wait(timeout=5)
        except subprocess.TimeoutExpired:
            clock.kill()
        _transport("locate 0")
    assert engine.interrupt() == 0, engine.err
    events = listener.snapshot()
    kinds = [m.type for _, m in events]
    assert "stop" in kinds and ("start" in kinds or "continue" in kinds), sorted(set(kinds))

    # what the engine followed: clock ticks (24 per beat) between Start/Continue and Stop
    ticks = [t for t, m in events if m.type == "clock"]
    stop_times = [t for t, m in events if m.type == "stop"]
    first_stop = stop_times[0]
    continue_time = next(t for t, m in events if m.type in ("continue", "start") and t > first_stop)
    onsets = onset_times(events, channel=0)
    assert len(onsets) >= 5, [(round(t, 3), m.type) for t, m in events if m.type != "clock"]
    # each onset is sent as a tick arrives (lag after the nearest tick before it)
    lags = [onset - max((t for t in ticks if t <= onset + 0.002), default=onset - 1) for onset in onsets]
    # consecutive onsets are 12 ticks apart (a tick JACK dropped in an xrun may shift one by one tick)
    spacing = []
    for a, b in zip(onsets, onsets[1:]):
        if any(a < t < b for t in stop_times):
            continue
        count = sum(1 for t in ticks if a + 0.002 < t <= b + 0.002)
        spacing.append(count)
    intervals = [b - a for a, b in zip(onsets, onsets[1:])]
    print(f"\nMIDI clock 90 BPM: {len(onsets)} onsets; lag after the tick median {statistics.median(lags) * 1e3:.2f} ms, "
          f"max {max(lags) * 1e3:.2f} ms; ticks between onsets {spacing}; interval median "
          f"{statistics.median(intervals) * 1e3:.1f} ms (333.3 nominal, in JACK time, which runs slow on a loaded box)")
    assert statistics.median(lags) < 0.004
    assert sum(lag < 0.015 for lag in lags) >= 0.8 * len(lags), [round(x * 1e3, 1) for x in lags]
    assert sum(count % 12 in (11, 0, 1) and count > 0 for count in spacing) >= 0.8 * len(spacing), spacing
    assert statistics.median(spacing) == 12
    assert not [t for t in onsets if first_stop + 0.05 < t < continue_time]  # silent while stopped
    assert [t for t in onsets if t > continue_time]  # and plays again after Continue
    assert still_sounding(events) == []


def _random_message(rng: random.Random) -> mido.Message:
    kind = rng.random()
    channel = rng.randrange(16)
    if kind < 0.35:
        return mido.Message("note_on", note=rng.randrange(128), velocity=rng.randrange(128), channel=channel)
    if kind < 0.55:
        return mido.Message("note_off", note=rng.randrange(128), channel=channel)
    if kind < 0.65:
        return mido.Message("control_change", control=rng.randrange(120), value=rng.randrange(128), channel=channel)
    if kind < 0.72:
        return mido.Message("pitchwheel", pitch=rng.randrange(-8192, 8192), channel=channel)
    if kind < 0.78:
        return mido.Message("aftertouch", value=rng.randrange(128), channel=channel)
    if kind < 0.83:
        return mido.Message("polytouch", note=rng.randrange(128), value=rng.randrange(128), channel=channel)
    if kind < 0.88:
        return mido.Message("program_change", program=rng.randrange(128), channel=channel)
    if kind < 0.93:
        return mido.Message("sysex", data=[rng.randrange(128) for _ in range(rng.randrange(1, 12))])
    if kind < 0.97:
        return mido.Message("clock")
    return mido.Message("songpos", pos=rng.randrange(1000))


def test_flood_of_random_messages_the_grid_keeps_time_and_nothing_sticks(tiny_model, seed_midi, engines, clients, jack_server):
    engine = engines(tiny_model, "--bpm", "120", "--mode", "accompany", "--seed-midi", str(seed_midi),
                     "--response-bars", "64")
    listener, player = clients("listen"), clients("play")
    connect(engine.output, listener.jack_name)
    connect(player.jack_name, engine.input)
    time.sleep(1.0)
    rng = random.Random(7)
    start = time.perf_counter()
    sent = 0
    # 10,000 messages a second for 5 s, paced 10 per millisecond (JACK drops unpaced bursts)
    while sent < 50_000:
        target = start + sent / 10_000
        while time.perf_counter() < target:
            time.sleep(0.0005)
        for _ in range(10):
            player.port.send(_random_message(rng))
        sent += 10
    flood_end = time.perf_counter()
    time.sleep(2.0)
    assert engine.proc.poll() is None, engine.err
    assert engine.interrupt() == 0, engine.err
    assert "Traceback" not in engine.err
    for word in ("sysex", "pitch bend", "aftertouch", "program change"):
        assert engine.err.count(word) <= 1, engine.err
    events = [(t, m) for t, m in listener.snapshot()]
    onsets = onset_times(events, channel=0)
    during = [t for t in onsets if start <= t <= flood_end]
    after = [t for t in onsets if t > flood_end]
    errors_all = grid_errors(onsets, 0.25)
    errors_after = grid_errors(onsets, 0.25)[len(onsets) - len(after):]
    print(f"\nflood: {sent} messages in {flood_end - start:.2f} s; onsets during {len(during)}, after {len(after)}; "
          f"grid error after flood p99 {percentile(errors_after, 99) * 1e3:.2f} ms, whole run max "
          f"{max(errors_all) * 1e3:.2f} ms")
    assert len(after) >= 5  # still playing afterwards
    # on the same grid as before the flood (no drift): the engine's own send times are tight; what the
    # listener sees adds the loaded JACK server's delivery jitter
    found = re.search(r"emission error median ([0-9.]+) ms, p99 ([0-9.]+) ms", engine.out)
    assert found and float(found.group(2)) < 20.0, engine.out
    print(f"engine send error over the whole run: median {found.group(1)} ms, p99 {found.group(2)} ms")
    assert statistics.median(errors_after) < 0.005
    assert max(errors_after) < 0.050
    assert len(during) >= 10  # kept playing during the flood
    assert 0 in all_notes_off_channels(events)
    assert still_sounding(events) == []


def test_output_looped_back_to_input_never_answers_itself(tiny_model, engines, clients, jack_server):
    # The echo window is widened from its 30 ms default: a loaded shared box with a non-real-time JACK
    # dummy server sometimes delivers the echo later than that, which is not what this test is about.
    engine = engines(tiny_model, "--bpm", "120", "--response-bars", "1", "--wait-beats", "1", "--echo-ms", "150")
    listener, player = clients("listen"), clients("play")
    connect(engine.output, listener.jack_name)
    connect(player.jack_name, engine.input)
    connect(engine.output, engine.input)  # the loop (loopMIDI, a DAW routing)
    time.sleep(0.2)
    played = time.perf_counter()
    player.play_phrase([60, 64, 67, 72], interval=0.25, length=0.2)
    # 1 beat of silence (0.5 s), 1 bar of answer (8 steps = 2 s), then it must stay quiet
    time.sleep(5.0)
    assert engine.interrupt() == 0, engine.err
    onsets = [t for t in onset_times(listener.snapshot(), channel=0) if t > played + 0.9]
    # one answer of 8 steps (7 if JACK dropped a note-on in an xrun), then silence: no self-answers
    assert 7 <= len(onsets) <= 8, (len(onsets), engine.err, engine.out)
    assert onsets[-1] - onsets[0] < 2.0
    assert "own notes come back" in engine.err
