"""Do the model's onsets stay on the DAW's beat under ``--clock midi``? ``jack_midi_clock`` as the DAW.

On a JACK server of its own (``jackd -n``, dummy driver) this runs ``jack_midi_clock -b 90 -B`` into
``lofi-live run --clock midi`` on the shipped ``lofi-seed`` model (a strike nearly every step), with a
listener (mido, JACK) on both the clock and the engine's notes, ``--runs`` times for ``--seconds`` of
rolling transport. Each gap between two onsets is counted by time, in ticks of the clock the listener
saw (the ticks' least-squares line: a tick the server dropped or delayed moves no position), and
must be a whole number of 12-tick steps within a quarter tick. It prints, per run, the onsets, the
gaps off that, the largest deviation, and the engine's own stop line (duplicates and lost ticks).

    python benchmarks/midi_clock_check.py [--runs 3] [--seconds 16]

Needs ``jackd``, ``jack_midi_clock`` and ``jack_transport`` (``./run.sh test`` installs them).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parent.parent
SERVER = f"lofi-clock-check-{os.getpid()}"
BACKEND = "mido.backends.rtmidi/UNIX_JACK"
QUARTER_TICK = 0.25


def jack(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=20, **kwargs)


def wait_for(port: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while port not in jack("jack_lsp").stdout.split("\n"):
        if time.monotonic() > deadline:
            raise SystemExit(f"error: port {port!r} did not appear")
        time.sleep(0.1)


def one_run(number: int, seconds: float) -> bool:
    name = f"LoFi Clock Check {number}"
    engine = subprocess.Popen(
        [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--name", name, "--clock", "midi",
         "--model", str(ROOT / "exported_models" / "lofi-seed.json"), "--response-bars", "64", "--seed", "1",
         "--seed-midi", str(ROOT / "examples" / "continuation-grid.mid")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    heard: list[tuple[float, mido.Message]] = []
    lock = threading.Lock()

    def on_message(message: mido.Message) -> None:
        with lock:
            heard.append((time.perf_counter(), message))

    listener = mido.Backend(BACKEND).open_input("listen", virtual=True, client_name=f"clock-check-listen-{number}",
                                                callback=on_message)
    clock = None
    try:
        wait_for(f"{name}:{name}")
        jack("jack_transport", input="stop\nlocate 0\nquit\n")
        clock = subprocess.Popen(["jack_midi_clock", "-b", "90", "-B", f"{name}:{name}",
                                  f"clock-check-listen-{number}:listen"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        jack("jack_connect", f"{name} Out:{name}", f"clock-check-listen-{number}:listen")
        time.sleep(1.0)
        jack("jack_transport", input="play\nquit\n")
        time.sleep(seconds)
        jack("jack_transport", input="stop\nquit\n")
        time.sleep(0.5)
    finally:
        if clock is not None:
            clock.send_signal(signal.SIGINT)
            clock.wait(timeout=10)
        engine.send_signal(signal.SIGINT)
        out, err = engine.communicate(timeout=30)
        listener.close()
    with lock:
        events = list(heard)
    ticks = [t for t, m in events if m.type == "clock"]
    onsets: list[float] = []
    for t, m in events:
        if m.type == "note_on" and m.velocity > 0 and (not onsets or t - onsets[-1] > 0.02):
            onsets.append(t)
    if len(ticks) < 48 or len(onsets) < 3:
        print(f"run {number}: {len(ticks)} ticks, {len(onsets)} onsets heard: nothing to judge ({err.strip()[-300:]})")
        return False
    period = statistics.median(b - a for a, b in zip(ticks, ticks[1:]))
    index = [round((t - ticks[0]) / period) for t in ticks]  # a dropped tick leaves a gap in the count
    mean_i, mean_t = statistics.fmean(index), statistics.fmean(ticks)
    slope = sum((i - mean_i) * (t - mean_t) for i, t in zip(index, ticks)) / sum((i - mean_i) ** 2 for i in index)
    position = [(t - ticks[0]) / slope for t in onsets if ticks[0] < t < ticks[-1]]
    gaps = [b - a for a, b in zip(position, position[1:])]
    off = [abs(gap - 12 * round(gap / 12)) for gap in gaps]
    stop = re.search(r"MIDI clock: .*", out)
    bad = sum(each > QUARTER_TICK for each in off)
    print(f"run {number}: {len(position)} onsets over {len(ticks)} ticks (period {slope * 1e3:.2f} ms); "
          f"gaps off a multiple of 12 ticks by over a quarter tick: {bad} of {len(gaps)}; largest {max(off):.3f} "
          f"ticks; engine: {stop.group(0) if stop else out.strip()[-200:]}")
    return bad == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=16.0)
    args = parser.parse_args()
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(["jackd", "-n", SERVER, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["JACK_DEFAULT_SERVER"] = SERVER
    try:
        jack("jack_wait", "-s", SERVER, "-w", "-t", "10", check=True)
        results = [one_run(number, args.seconds) for number in range(1, args.runs + 1)]
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{sum(results)} of {len(results)} runs with every gap a whole number of steps (load average "
          f"{os.getloadavg()[0]:.1f})")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
