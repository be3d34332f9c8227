"""Closing the MIDI ports after the JACK server went away must end the process cleanly (issue: a
segfault at exit, from closing the watcher's JACK client of a stopped server under a new one).

Each case runs a process that opens :class:`lofi_live.midi.live_ports.MidiPorts` on a JACK server of
the test's own (``jackd -n NAME``), has the server stopped (and started again) under it, then closes
the ports and exits; the exit code must be 0 and the exit must come within seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from jack_helpers import ROOT, PrivateServer

pytestmark = [pytest.mark.jack]

# poll_seconds 60: the watcher sees the loss (the shutdown callback wakes it) but does not look again
# before the close, so the close meets the client of the stopped server
SESSION = r'''
import sys
from lofi_live.midi.live_ports import MidiPorts
events = []
ports = MidiPorts("jack", lambda message, stamp: None, name="LoFi Close", poll_seconds=60.0, on_event=events.append)
print("open", flush=True)
sys.stdin.readline()
ports.close()
print("closed", " ".join(event.kind for event in events), flush=True)
'''


@pytest.fixture
def server_name(monkeypatch):
    if not shutil.which("jackd"):
        pytest.skip("jackd not installed (apt-get install jackd2): real MIDI port tests need a JACK server")
    name = f"lofi-close-{os.getpid()}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    return name


@pytest.mark.parametrize("restarted", [True, False], ids=["server-restarted", "server-still-down"])
def test_closing_the_ports_after_the_server_went_away_exits_cleanly(server_name, restarted):
    servers = [PrivateServer(server_name)]
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", SESSION], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "open"
        servers[0].stop()
        time.sleep(1.5)  # the shutdown callback has woken the watcher: the system is lost
        if restarted:
            servers.append(PrivateServer(server_name))
        began = time.monotonic()
        out, err = proc.communicate("\n", timeout=30)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
        for server in servers:
            server.stop()
    assert proc.returncode == 0, (proc.returncode, out, err[-2000:])
    assert out.splitlines()[-1] == "closed lost", out
    assert took < 10.0, took
