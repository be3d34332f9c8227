"""``./run.sh play`` on a fresh Linux machine: no ALSA sequencer and no JACK server running.

run.sh must start a JACK server with the dummy driver itself, open the "LoFi Live" ports on it, answer a
played phrase on the shipped model and stop cleanly on Ctrl-C. run.sh is given a JACK server name of its own
(``JACK_DEFAULT_SERVER``, which every JACK tool and client honours) that no server uses yet, so the machine
looks fresh to it whatever JACK server other tests run; the test stops the server run.sh started by the PID
run.sh prints. The player and the listener run in a subprocess so that they reach that server too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lofi_live.model.loader import DEFAULT_MODEL

pytestmark = [pytest.mark.jack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
INPUT, OUTPUT = "LoFi Live:LoFi Live", "LoFi Live Out:LoFi Live"
#: run.sh installs .venv-runtime before it plays: minutes on the first call, seconds after.
START_TIMEOUT_S = 600

#: Plays a phrase into the engine and listens to its answer; prints "answered" (or "silent"), waits for a
#: line on stdin (the engine has stopped), then prints what it heard as JSON.
PHRASE_CLIENT = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import JACK_BACKEND
from jack_helpers import Listener, Player, connect, note_ons, still_sounding

listener, player = Listener(JACK_BACKEND), Player(JACK_BACKEND)
connect({OUTPUT!r}, listener.jack_name)
connect(player.jack_name, {INPUT!r})
time.sleep(0.2)
player.play_phrase([60, 62, 64, 65, 67, 69, 71, 72], interval=0.25, length=0.2)
deadline = time.monotonic() + 20
while not note_ons(listener.snapshot()) and time.monotonic() < deadline:
    time.sleep(0.1)
print("answered" if note_ons(listener.snapshot()) else "silent", flush=True)
sys.stdin.readline()
time.sleep(0.3)
events = listener.snapshot()
print(json.dumps({{"note_ons": len(note_ons(events)), "sounding": still_sounding(events)}}), flush=True)
"""


def _jack_state(env: dict[str, str]) -> str:
    return subprocess.run(["jack_wait", "-c"], env=env, capture_output=True, text=True, timeout=10).stdout.strip()


def _wait_for_ports(env: dict[str, str], play: subprocess.Popen, stderr: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        listing = subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True, timeout=10).stdout.splitlines()
        if INPUT in listing and OUTPUT in listing:
            return
        assert play.poll() is None, f"./run.sh play exited with {play.returncode}:\n{stderr.read_text()}"
        assert time.monotonic() < deadline, f"no '{INPUT}' ports within {START_TIMEOUT_S} s:\n{stderr.read_text()}"
        time.sleep(0.2)


def _stop_started_server(stderr: Path, env: dict[str, str]) -> None:
    """Stop the JACK server run.sh says it started (by that PID, and only if it is a jackd)."""
    started = re.search(r"started a JACK server .*\(pid (\d+)", stderr.read_text())
    if not started:
        return
    pid = int(started.group(1))
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and comm.read_text().strip() == "jackd":
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _jack_state(env) == "running" and time.monotonic() < deadline:
            time.sleep(0.1)


def test_play_starts_jack_opens_the_ports_answers_a_phrase_and_stops_on_ctrl_c(tmp_path):
    if sys.platform != "linux" or os.path.exists("/dev/snd/seq"):
        pytest.skip("run.sh play starts JACK only on Linux without an ALSA sequencer; this machine has one")
    if not (shutil.which("jackd") and shutil.which("jack_wait") and shutil.which("jack_lsp")):
        pytest.skip("jackd not installed (./run.sh test installs jackd2 with apt-get)")
    env = {key: value for key, value in os.environ.items()
           if key not in ("LOFI_LIVE_MIDI_BACKEND", "LOFI_LIVE_MODEL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(JACK_DEFAULT_SERVER=f"lofi-run-sh-{os.getpid()}", TMPDIR=str(tmp_path))
    assert _jack_state(env) == "not running"

    stdout, stderr = tmp_path / "play.out", tmp_path / "play.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        play = subprocess.Popen(["./run.sh", "play", "--bpm", "120", "--response-bars", "1", "--seed", "1"],
                                cwd=ROOT, env=env, stdout=out, stderr=err)
    client = None
    try:
        _wait_for_ports(env, play, stderr)
        client = subprocess.Popen([sys.executable, "-c", PHRASE_CLIENT], env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = client.stdout.readline().strip()
        play.send_signal(signal.SIGINT)  # run.sh execs lofi-live: this is Ctrl-C to the engine
        assert play.wait(timeout=30) == 0, stderr.read_text()
        heard, client_err = client.communicate("stopped\n", timeout=30)
        assert client.returncode == 0, client_err
    finally:
        for process in (play, client):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        _stop_started_server(stderr, env)

    assert "started a JACK server with the dummy driver" in stderr.read_text()
    log = stdout.read_text()
    assert f"model {DEFAULT_MODEL} " in log and f"play into '{INPUT}'" in log, log
    assert first == "answered", (log, stderr.read_text())
    result = json.loads(heard)
    assert result["note_ons"] > 0 and result["sounding"] == [], result
    assert _jack_state(env) == "not running"
