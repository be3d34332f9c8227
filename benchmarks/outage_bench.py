"""How fast does ``lofi-live run`` notice that the MIDI system or a device went away, and come back?

A musician unplugs a keyboard or restarts JACK mid-jam; the target is the one-line message within a
second, and the ports back by themselves soon after the server is. On a JACK server of its own
(``jackd -n``, dummy driver) this runs one ``lofi-live run`` on the shipped default model with
``--in`` naming a player client, then, ``--rounds`` times each:

* the player quits (its process ends): seconds until ``... is gone`` is printed; it starts again:
  seconds until ``... is back``;
* the server stops (SIGTERM): seconds until ``the JACK server is gone``; it starts again: seconds from
  the new server answering until ``the JACK server is back``.

It prints the median and the largest of each. Needs ``jackd`` (``./run.sh test`` installs it).

    python benchmarks/outage_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAYER = ROOT / "tests" / "jack_player.py"
SERVER = f"lofi-outage-bench-{os.getpid()}"


def start_server() -> subprocess.Popen:
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    proc = subprocess.Popen(["jackd", "-n", SERVER, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "128"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["jack_wait", "-s", SERVER, "-w", "-t", "10"], capture_output=True, timeout=20, check=True)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def start_player(name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(PLAYER), name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


class Lines:
    """The engine's output lines, stamped as they arrive."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[tuple[float, str]] = []
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append((time.perf_counter(), line.rstrip("\n")))

    def wait(self, text: str, after: float, timeout: float = 30.0) -> float:
        """When the first line containing ``text`` printed after ``after`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stamp, line in list(self.lines):
                if stamp >= after and text in line:
                    return stamp
            time.sleep(0.005)
        raise SystemExit(f"no {text!r} within {timeout} s:\n" + "\n".join(line for _, line in self.lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    server = start_server()
    player_name = "Bench Keys"
    player = start_player(player_name)
    engine = subprocess.Popen([sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--in", f"{player_name}:{player_name}"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(engine)
    figures: dict[str, list[float]] = {"port gone": [], "port back": [], "server gone": [], "server back": []}
    try:
        lines.wait("Ctrl-C to stop", 0.0, timeout=60)
        for _ in range(args.rounds):
            quit_at = time.perf_counter()
            player.kill()
            player.wait()
            figures["port gone"].append(lines.wait("is gone", quit_at) - quit_at)
            back_at = time.perf_counter()
            player = start_player(player_name)
            figures["port back"].append(lines.wait("is back", back_at) - back_at)

            stop_at = time.perf_counter()
            server.terminate()
            figures["server gone"].append(lines.wait("the JACK server is gone", stop_at) - stop_at)
            server.wait(timeout=10)
            player.kill()
            player.wait()
            time.sleep(1.0)
            server = start_server()
            up_at = time.perf_counter()
            figures["server back"].append(lines.wait("the JACK server is back", up_at) - up_at)
            player = start_player(player_name)
            lines.wait(f"MIDI input '{player_name}:{player_name}' is back", up_at)
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=30)
        player.kill()
        stop(server)
    print(f"outage notice and return, {args.rounds} rounds (JACK dummy server, shipped model):")
    for name, values in figures.items():
        print(f"  {name:12s} median {statistics.median(values) * 1e3:7.1f} ms   max {max(values) * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
