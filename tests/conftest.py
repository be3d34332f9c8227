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
    """A running JACK server (the dummy driver, no sound card); yields the mido backend name.

    Uses a server that is already running, else starts one and stops it by its PID at the end.
    Skips with the reason when jackd is not installed.
    """
    if _jack_running():
        yield JACK_BACKEND
        return
    if not shutil.which("jackd"):
        pytest.skip("jackd not installed (apt-get install jackd2): real MIDI port tests need a JACK server")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(
        ["jackd", "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _jack_running():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("jackd did not start within 10 s")
        time.sleep(0.1)
    try:
        yield JACK_BACKEND
    finally:
        server.terminate()
        server.wait(timeout=10)
