"""Fixtures shared by all tests: the shared data folder and a real JACK server for MIDI ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root, or a skip saying it is absent."""
    if not (SHARED_DATA / "lofi").is_dir():
        pytest.skip(f"shared MIDI data not found at {SHARED_DATA}")
    return SHARED_DATA


def _jack_running() -> bool:
    if not shutil.which("jack_wait"):
        return False
    return subprocess.run(["jack_wait", "-c"], capture_output=True, text=True).stdout.startswith("running")


@pytest.fixture(scope="session")
def jack_server() -> Iterator[str]:
    """A JACK server of this test session's own (the dummy driver, no sound card); yields the mido
    backend name.

    The server is named for the session (``jackd -n lofi-tests-PID``) and ``JACK_DEFAULT_SERVER`` points
    every client of the session there (in this process and in the processes it starts): a server
    shared with another test session would be stopped under this one when that session ends,
    failing whatever test runs then. Without jackd, a server that is already running is used;
    else the JACK tests skip with the reason. Stopped by its PID at the end.
    """
    if not shutil.which("jackd"):
        if _jack_running():
            yield JACK_BACKEND
            return
        pytest.skip("jackd not installed (apt-get install jackd2): real MIDI port tests need a JACK server")
    name = f"lofi-tests-{os.getpid()}"
    before = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(
        ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _jack_running():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("jackd did not start within 10 s")
            time.sleep(0.1)
        yield JACK_BACKEND
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if before is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = before
