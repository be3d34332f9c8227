"""MIDI control through real JACK ports (issue 7): a mapped CC changes what the terminal view shows,
panic silences everything at once, and ``lofi-live run --learn`` maps a controller and saves it.

The CC and panic tests run the engine in this process on real JACK ports (a fake model: the
behaviour under test is MIDI, not inference) so they can read its status; the ``--learn`` test runs
``lofi-live run`` as a subprocess and answers its prompts from a virtual controller.
"""

from __future__ import annotations

import io
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import mido
import pytest
from rich.console import Console

from engine_fakes import FakeModel
from jack_helpers import (
    ROOT, Listener, Player, connect, engine_command, engine_ports, still_sounding, unique,
)
from lofi_live.live.controls import ACTIONS, ControlMap, load_config
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.midi.live_ports import MidiPorts
from lofi_live.model.sampling import Sampler
from lofi_live.live.view import render

pytestmark = [pytest.mark.jack]


def _cc(number: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=number, value=value, channel=channel)


def _view_text(engine: Engine) -> str:
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="standard")
    console.print(render(engine.snapshot()))
    return console.export_text()


def _wait(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _send_until(player, message, condition, tries: int = 8) -> bool:
    """Send ``message`` until ``condition`` holds: a loaded JACK dummy server drops the odd message
    between clients, and a real knob sends a stream of values anyway."""
    for _ in range(tries):
        player.send(message)
        if _wait(condition, timeout=0.25):
            return True
    return False


@pytest.fixture
def live(jack_server):
    """An engine on real JACK ports with a player into its input and a listener on its output."""
    made = []

    def make(controls: ControlMap, **config):
        name = unique("LoFi CC")
        engine = Engine(FakeModel(), Sampler(0.5, None, 0), send=lambda m: None, controls=controls,
                        config=EngineConfig(bpm=120, realtime=False, **config))
        ports = MidiPorts("jack", engine.on_message, name=name)
        engine.send = ports.send
        player, listener = Player(jack_server), Listener(jack_server)
        made.append((engine, ports, player, listener))
        engine_in, engine_out = engine_ports(name)
        connect(player.jack_name, engine_in)
        connect(engine_out, listener.jack_name)
        return engine, player, listener

    yield make
    for engine, ports, player, listener in made:
        engine.stop()
        engine.join(5)
        ports.close()
        player.close()
        listener.close()


def test_a_cc_on_the_mapped_number_changes_the_temperature_the_view_shows(live):
    engine, player, _ = live(ControlMap({"temperature": 21}))
    engine.start()
    assert "temperature 0.50" in _view_text(engine)
    assert _send_until(player, _cc(21, 127), lambda: engine.responder.temperature == pytest.approx(2.0)), \
        engine.responder.temperature
    assert "temperature 2.00" in _view_text(engine)
    player.send(_cc(20, 0))  # another number: no change
    time.sleep(0.1)
    assert engine.responder.temperature == pytest.approx(2.0)
    assert _send_until(player, _cc(21, 0), lambda: engine.responder.temperature == pytest.approx(0.1))
    assert "temperature 0.10" in _view_text(engine)


def test_panic_silences_everything_at_once_and_the_engine_plays_on(live):
    # accompany mode with long notes (gate 6 steps) so several model notes overlap, a held played
    # note through --thru, and a metronome: everything sounding must end at once
    engine, player, listener = live(ControlMap({"panic": 27}), mode="accompany", response_bars=64, gate=6,
                                    thru=True, metronome=9)
    engine.prime(["0.4.7", "C4"])
    engine.start()
    time.sleep(0.6)
    for _ in range(3):  # a held played note: thru sounds it (sent again if a loaded JACK server dropped it)
        player.send(mido.Message("note_on", note=50, velocity=90, channel=3))
        if _wait(lambda: (3, 50) in engine.voices.sounding, timeout=0.5):
            break
    time.sleep(0.5)
    sounding = set(engine.voices.sounding)  # what the engine has sounding just before the panic
    for _ in range(3):  # pressed again if a loaded JACK server dropped the CC (the engine never saw it)
        pressed = time.perf_counter()
        player.send(_cc(27, 127))
        if _wait(lambda: any(t > pressed and m.type == "control_change" and m.control == 123
                             for t, m in listener.snapshot()), timeout=0.3):
            break
        player.send(_cc(27, 0))  # release the button so the next press is an edge again
    time.sleep(0.4)
    events = listener.snapshot()
    after = [(t, m) for t, m in events if t > pressed]
    offs = {(m.channel, m.note): t for t, m in reversed(after) if m.type == "note_off"}  # the first note-off of each
    cc123 = {m.channel: t for t, m in reversed(after) if m.type == "control_change" and m.control == 123}
    assert len(sounding) >= 3 and (3, 50) in sounding, sounding
    assert sounding <= set(offs), (sounding, offs)
    assert set(cc123) >= {0, 3, 9}
    panic_times = [offs[key] for key in sounding] + list(cc123.values())
    latency = max(panic_times) - pressed
    spread = max(panic_times) - min(panic_times)
    print(f"\npanic: {len(sounding)} sounding notes; the last note-off / CC 123 arrived {latency * 1e3:.2f} ms after "
          f"the CC was sent, all within {spread * 1e3:.2f} ms")
    assert latency < 0.030  # two JACK hops on a loaded, non-real-time dummy server
    assert spread < 0.010
    assert still_sounding(events) == []
    # the model is silent while the player still holds the note (the metronome on channel 10 keeps time)
    assert not [m for _, m in after if m.type == "note_on" and m.velocity > 0 and m.channel == 0]
    # the engine did not stop: the player plays again and the model accompanies again
    assert engine.running
    player.send(mido.Message("note_off", note=50, channel=3))
    again = time.perf_counter()
    player.play_phrase([60, 62], interval=0.25, length=0.2, channel=3)
    assert _wait(lambda: any(t > again and m.type == "note_on" and m.velocity > 0 and m.channel == 0
                             for t, m in listener.snapshot()), timeout=3.0)


def _start_learning(tmp_path: Path, *extra: str):
    from model_fixtures import build_model

    model = build_model(tmp_path / "model")
    name = unique("LoFi Learn")
    proc = subprocess.Popen(engine_command(model, name, "--learn", "--config", str(tmp_path / "c.toml"), *extra),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: queue.SimpleQueue = queue.SimpleQueue()
    every: list[str] = []
    reader = threading.Thread(target=lambda: [(lines.put(line), every.append(line)) for line in proc.stdout], daemon=True)
    reader.start()

    def finish(timeout: float = 30.0) -> tuple[str, str]:
        """Wait for the run to end: (all of stdout, stderr)."""
        err = proc.stderr.read() if proc.wait(timeout=timeout) is not None else ""
        reader.join(5)
        return "".join(every), err

    return proc, name, lines, finish


def _expect(lines: queue.SimpleQueue, text: str, timeout: float = 15.0) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed; got {seen}")


def test_learn_maps_the_controller_saves_the_config_then_plays(tmp_path, jack_server):
    player = Player(jack_server)  # the controller, attached with --in as a real one would be
    proc, name, lines, finish = _start_learning(tmp_path, "--in", player.name, "--learn-timeout", "1", "--duration", "1")
    try:
        _expect(lines, "move the knob for temperature")
        for value in (10, 20, 30):  # a knob sends a stream
            player.send(_cc(21, value))
        _expect(lines, "temperature -> CC 21")
        _expect(lines, "move the knob for tempo")
        player.send(_cc(21, 40))  # the rest of the temperature knob's stream: ignored
        player.send(_cc(22, 64))
        _expect(lines, "tempo -> CC 22")
        _expect(lines, "press the button for mode")
        player.send(_cc(25, 127))
        player.send(_cc(25, 0))
        _expect(lines, "mode -> CC 25")
        _expect(lines, "saved 3 control(s)")  # the other actions time out and are skipped
        out, err = finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            finish()
        player.close()
    assert proc.returncode == 0, err
    assert "stopped after" in out  # it went on to play
    assert load_config(tmp_path / "c.toml").cc == {"temperature": 21, "tempo": 22, "mode": 25}


def test_learn_without_a_controller_skips_every_action_and_never_hangs(tmp_path, jack_server):
    proc, _, _, finish = _start_learning(tmp_path, "--learn-timeout", "0.2", "--duration", "0.5", "--quiet")
    started = time.monotonic()
    try:
        out, err = finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            finish()
    assert proc.returncode == 0, err
    assert "no control learned" in out and out.count(": skipped") == len(ACTIONS)
    assert not (tmp_path / "c.toml").exists()
    print(f"\n--learn with no controller ended after {time.monotonic() - started:.1f} s")
