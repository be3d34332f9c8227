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
    note_ons,
    onset_times,
    percentile,
    unique,
    still_sounding,
    unmatched_note_ons,
    wait_for_ports,
)
from lofi_live.midi.files import NoteEvent, write_midi

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
    if len(ticks) < 24:  # not a beat of them: the engine had nothing to follow
        pytest.skip(f"jack_midi_clock's ticks did not arrive: the listener saw {len(ticks)}, with Start and Stop "
                    "(the dummy JACK server stalls now and then)")
    stop_times = [t for t, m in events if m.type == "stop"]
    first_stop = stop_times[0]
    continue_time = next(t for t, m in events if m.type in ("continue", "start") and t > first_stop)
    onsets = onset_times(events, channel=0)
    assert len(onsets) >= 5, [(round(t, 3), m.type) for t, m in events if m.type != "clock"]
    # each onset is sent when its tick is due by the clock's phase (lofi_live.timing.tick_follower), or
    # when the tick arrives if sooner: its distance from the nearest tick the listener saw
    lags = [min((abs(onset - t) for t in ticks), default=1.0) for onset in onsets]
    # consecutive onsets are 12 ticks apart (a tick JACK dropped in an xrun may shift one by one tick)
    spacing = []
    for a, b in zip(onsets, onsets[1:]):
        if any(a < t < b for t in stop_times):
            continue
        count = sum(1 for t in ticks if a + 0.002 < t <= b + 0.002)
        spacing.append(count)
    intervals = [b - a for a, b in zip(onsets, onsets[1:])]
    print(f"\nMIDI clock 90 BPM: {len(onsets)} onsets; distance from the nearest tick median {statistics.median(lags) * 1e3:.2f} ms, "
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


def test_grid_model_a_held_chord_is_recorded_as_one_long_note_per_pitch(engines, clients, tmp_path, jack_server):
    from model_fixtures import build_grid_token_model

    model = build_grid_token_model(tmp_path / "grid")
    record = tmp_path / "held.mid"
    engine = engines(model, "--bpm", "120", "--record", str(record), "--wait-beats", "2", "--response-bars", "1",
                     "--seed", "3", "--quiet")
    listener, player = clients("listen"), clients("play")
    connect(engine.output, listener.jack_name)
    connect(player.jack_name, engine.input)
    time.sleep(0.3)
    chord = (60, 64, 67)
    for pitch in chord:
        player.send(mido.Message("note_on", note=pitch, velocity=80))
    time.sleep(1.0)  # 2 beats at 120 BPM
    for pitch in chord:
        player.send(mido.Message("note_off", note=pitch, velocity=0))
    time.sleep(1.0 + 2.0 + 0.8)  # 2 silent beats, a 1-bar answer, and a little more
    assert engine.interrupt() == 0, engine.err
    midi = mido.MidiFile(record)
    per_beat = midi.ticks_per_beat
    parts = {}
    for track in midi.tracks:
        tick, started, notes = 0, {}, []
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                started[message.note] = tick
            elif message.type in ("note_on", "note_off") and message.note in started:
                notes.append((message.note, (tick - started.pop(message.note)) / per_beat))
        parts[track.name] = notes
    player_notes = sorted(parts["player"])
    assert [pitch for pitch, _ in player_notes] == list(chord), player_notes  # one note per pitch
    assert all(abs(length - 2.0) < 0.15 for _, length in player_notes), player_notes
    model_notes = parts["model"]
    assert model_notes, engine.err  # it answered, and it was heard (a loaded JACK dummy server drops some)
    assert len(note_ons(listener.snapshot(), channel=0)) >= len(model_notes) // 2
    # the model's notes end on the grid (a hold sustains, a rest or an onset ends them at a boundary)
    assert all(abs(length * 2 - round(length * 2)) < 1e-3 and length >= 0.5 for _, length in model_notes), model_notes
    assert still_sounding(listener.snapshot()) == []


def _model_failing_on_its_last_token(folder: Path) -> Path:
    """The tiny model with its embedding one row short: loading passes, but the first window that holds the
    vocabulary's last token makes ONNX Runtime raise inside the stepper (a fault, not bad input)."""
    import hashlib
    import json

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from model_fixtures import VOCABULARY, build_model

    path = build_model(folder)
    meta = json.loads(path.read_text())
    for graph in meta["graphs"].values():
        model = onnx.load(folder / graph["file"])
        for i, tensor in enumerate(model.graph.initializer):
            if tensor.name == "embedding":
                short = numpy_helper.to_array(tensor)[:-1]
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(short), "embedding"))
        data = model.SerializeToString()
        (folder / graph["file"]).write_bytes(data)
        graph["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(meta))
    assert VOCABULARY[-1] == "10.2.5"
    return path


@pytest.mark.parametrize("clock", ["internal", "midi"])
def test_a_stepper_that_raises_stops_run_with_one_line_nothing_sounding_and_the_session_written(
        clock, engines, clients, tmp_path, jack_server):
    model = _model_failing_on_its_last_token(tmp_path / "broken")
    record = tmp_path / "broken.mid"
    engine = engines(model, "--clock", clock, "--mode", "accompany", "--record", str(record), "--thru",
                     "--metronome", "10", "--quiet")
    listener, player = clients("listen"), clients("play")
    connect(engine.output, listener.jack_name)
    connect(player.jack_name, engine.input)
    time.sleep(0.3)
    # a note held through --thru (the model accompanies it), then the chord Bb D F (10.2.5): the first
    # window holding it makes the stepper raise
    script = [(0.2, mido.Message("note_on", note=50, velocity=80, channel=3))]
    script += [(1.2, mido.Message("note_on", note=p, velocity=80)) for p in (58, 62, 65)]
    script += [(1.4, mido.Message("note_off", note=p, velocity=0)) for p in (58, 62, 65)]
    if clock == "midi":
        player.send(mido.Message("start"))
    start = time.perf_counter()
    ticks = 0
    while engine.proc.poll() is None and time.perf_counter() - start < 10:
        now = time.perf_counter() - start
        while script and script[0][0] <= now:
            player.send(script.pop(0)[1])
        if clock == "midi" and now >= ticks * 60 / 120 / 24:
            player.port.send(mido.Message("clock"))
            ticks += 1
        time.sleep(0.002)
    assert engine.proc.poll() is not None, "the engine did not stop"
    engine.out, engine.err = engine.proc.communicate(timeout=10)
    assert engine.proc.returncode == 1, (engine.out, engine.err)
    # one line names the cause (ONNX Runtime's own log of the failed node aside; warnings are logged once)
    errors = [line for line in engine.err.splitlines() if not line.startswith("lofi-live: warning:")
              and "[E:onnxruntime:" not in line and line.strip()]
    assert len(errors) == 1 and errors[0].startswith("lofi-live: error: the engine stopped: "), engine.err
    assert "Traceback" not in engine.err
    time.sleep(0.2)
    events = listener.snapshot()
    heard = [(m.channel, m.note) for _, m in events if m.type == "note_on" and m.velocity > 0]
    assert (3, 50) in heard and any(channel == 0 for channel, _ in heard)  # thru and the model were sounding...
    assert still_sounding(events) == []  # ...and nothing is left on
    assert {0, 3, 9} <= all_notes_off_channels(events)
    assert record.exists() and Path(f"{record}.journal").read_text().rstrip().endswith("end")
