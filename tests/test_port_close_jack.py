"""Closing the MIDI ports after the JACK server went away must end the process cleanly (issue: a
segfault at exit, from closing the watcher's JACK client of a stopped server under a new one).

Each case runs a process that opens :class:`lofi_live.midi.live_ports.MidiPorts` on a JACK server of
the test's own (``jackd -n NAME``), has the server stopped (and started again) under it, then closes
the ports and exits; the exit code must be 0 and the exit must come within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import mido
import pytest

from jack_helpers import ROOT, MidiDump, PrivateServer, connect
from lofi_live.midi.live_ports import MidiPorts

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


def test_closing_waits_for_a_stalled_server_to_deliver_the_last_note_offs(server_name, tmp_path):
    """The last note-offs and All Notes Off are queued when the ports close; the server is stopped
    (a stall, as a loaded machine gives the dummy server) and runs again 0.8 s later. The close ends
    only after the server ran again (rtmidi flushes its queue in a last cycle before the port goes,
    and libjack's close waits for the server), and everything still arrives."""
    if not shutil.which("jack_midi_dump"):
        pytest.skip("jack_midi_dump not installed (apt-get install jackd2): the listener of this test")
    server = PrivateServer(server_name)
    dump = None
    try:
        ports = MidiPorts("jack", lambda message, stamp: None, name="LoFi Drain")
        dump = MidiDump(tmp_path / "heard.txt")
        connect(ports.output_name, dump.jack_name)
        time.sleep(0.3)
        sent = [mido.Message("note_off", note=pitch, velocity=0) for pitch in range(60, 72)]
        sent.append(mido.Message("control_change", control=123, value=0))
        os.kill(server.proc.pid, signal.SIGSTOP)
        resume = threading.Timer(0.8, os.kill, (server.proc.pid, signal.SIGCONT))
        resume.start()
        for message in sent:
            ports.send(message)
        began = time.monotonic()
        ports.close()
        took = time.monotonic() - began
        resume.join()
        time.sleep(0.3)
        heard = [message for _, message in dump.messages()]
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        if dump is not None:
            dump.close()
        server.stop()
    assert heard == sent, heard
    assert 0.8 <= took < 5.0, took
