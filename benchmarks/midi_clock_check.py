"""Do the model's onsets stay on the DAW's beat under ``--clock midi``? A real clock source on JACK.

On a JACK server of its own (``jackd -n``, dummy driver, started as ``./run.sh`` starts one, or with
real-time scheduling as a DAW's JACK runs: ``--realtime-server``) this plays a MIDI beat clock at 90 BPM into
``lofi-live run --clock midi`` on the shipped ``lofi-seed`` model (a strike nearly every step), and
listens to both the clock and the engine's notes with ``jack_midi_dump -a``: every event stamped
with JACK's frame time, exact to the sample, so the listener adds no timing of its own. The clock
comes from ``--source``:

* ``jack_midi_clock`` (``jack_midi_clock -b 90 -B``, JACK transport rolling): a DAW's clock;
* ``faulty``: ``tests/clock_sender.py``, which sends one tick in 50 twice and loses another one in
  50 on purpose, and says which: the engine's stop line must report them.

``--stalls N`` stops the JACK server N times a run (SIGSTOP, then SIGCONT), each time for 0.5 to 1.6
tick periods: the stalls a loaded machine gives the dummy server, made on purpose. Every later cycle
then comes that much later in wall time; by arrival time alone a stall of a period is a lost tick.

``faulty`` sends by the system clock, not JACK's: when the server stalls, what it sent meanwhile
arrives bunched in one JACK cycle, and the frame times of its later ticks come early by the stall.
Frame times then misplace its ticks, so that source is judged by a second listener in this process
that stamps each event with the wall time of the JACK cycle it came in (rtmidi's deltas on JACK's
clock): the clock the sender keeps.

Each onset is placed on the ticks the listener saw, counted by time: a copy (less than half a
period after the tick before) is dropped, a gap of about ``k`` periods counts ``k`` ticks (the ticks
lost on the way), and an onset between two ticks is that far between their counts. Every gap
between two onsets must then be a whole number of 12-tick steps within a quarter tick. It also
counts the onsets more than a quarter tick from their step's tick counted from Start (the DAW's
position); when the first tick after Start is lost on the way to the engine, which no receiver can
notice, every onset of that run is a tick late, though every gap is right. Per run it
prints the onsets, the gaps off that, the largest deviation, and the engine's stop line (copies and
lost ticks) beside what the listener and, for ``faulty``, the sender saw.

    python benchmarks/midi_clock_check.py [--runs 3] [--seconds 16] [--source jack_midi_clock|faulty]
                                          [--realtime-server] [--stalls N]

Needs ``jackd``, ``jack_midi_dump``, ``jack_midi_clock`` and ``jack_transport`` (``./run.sh test``
installs them).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = f"lofi-clock-check-{os.getpid()}"
QUARTER_TICK = 0.25
HEX_BYTE = re.compile(r"[0-9a-f]{2}")
BPM = 90


def jack(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=20, **kwargs)


def wait_for(port: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while port not in jack("jack_lsp").stdout.split("\n"):
        if time.monotonic() > deadline:
            raise SystemExit(f"error: port {port!r} did not appear")
        time.sleep(0.1)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def read_dump(text: str) -> list[tuple[int, list[str]]]:
    """``jack_midi_dump -a`` lines (``  98368: 90 3a 5a note on ...``) as (frame, the bytes in hex)."""
    events = []
    for line in text.splitlines():
        frame, _, rest = line.partition(":")
        data = list(itertools.takewhile(HEX_BYTE.fullmatch, rest.split()))
        if frame.strip().isdigit() and data:
            events.append((int(frame), data))
    return events


def tick_counts(ticks: list[int]) -> list[int]:
    """The count of each tick the listener saw after Start, by time: the first is 0 (MIDI's rule; a
    sender may send Start a tick ahead of it), copies get the count before, gaps count the ticks lost
    in them."""
    period = statistics.median(b - a for a, b in zip(ticks, ticks[1:]))
    counts = [0]
    for a, b in zip(ticks, ticks[1:]):
        counts.append(counts[-1] + (0 if b - a < period / 2 else max(1, round((b - a) / period))))
    return counts


def onset_positions(events: list[tuple[int, list[str]]]) -> tuple[list[float], int, int]:
    """Onsets (first note-on of a chord) in ticks from Start, placed between the ticks around them;
    also the distinct ticks the listener saw (copies not counted) and the ticks by count (those plus
    the gaps filled)."""
    begin = next((frame for frame, data in events if data[0] == "fa"), None)
    end = next((frame for frame, data in events if data[0] == "fc" and begin is not None and frame > begin), None)
    if begin is None:
        return [], 0, 0
    window = [(frame, data) for frame, data in events if frame > begin and (end is None or frame <= end)]
    ticks = [frame for frame, data in window if data[0] == "f8"]
    if len(ticks) < 48:
        return [], len(ticks), 0
    counts = tick_counts(ticks)
    period = (ticks[-1] - ticks[0]) / counts[-1]
    onsets: list[int] = []
    for frame, data in window:
        if data[0].startswith("9") and len(data) == 3 and data[2] != "00" and (not onsets or frame - onsets[-1] > period):
            onsets.append(frame)
    positions = []
    for frame in onsets:
        at = bisect.bisect_right(ticks, frame) - 1
        if 0 <= at < len(ticks) - 1:
            span = (frame - ticks[at]) / (ticks[at + 1] - ticks[at])
            positions.append(counts[at] + span * (counts[at + 1] - counts[at]))
    copies = sum(1 for a, b in zip(counts, counts[1:]) if a == b)
    return positions, len(ticks) - copies, counts[-1] + 1


class WallListener:
    """A JACK input in this process that records ``(microseconds of JACK's clock, bytes in hex)`` for
    every event, stamped with the cycle it came in (rtmidi's deltas, summed): the wall clock."""

    def __init__(self, name: str):
        import mido

        self.name = name
        self.port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_input(name, virtual=True, client_name=name)
        self.port._rt.cancel_callback()
        self.port._rt.ignore_types(timing=False)
        self.events: list[tuple[int, list[str]]] = []
        self._stop = False
        self._elapsed = 0.0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            event = self.port._rt.get_message()
            if event is None:
                time.sleep(0.0005)
                continue
            self._elapsed += event[1]
            self.events.append((round(self._elapsed * 1e6), [f"{byte:02x}" for byte in event[0]]))

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=1.0)
        self.port.close()


def hold_up(server: subprocess.Popen, seconds: float, stalls: int, seed: int) -> list[float]:
    """Wait ``seconds``, stopping ``server`` ``stalls`` times at even spacing meanwhile, each time for
    0.5 to 1.6 tick periods; the stalls made, in periods."""
    rng, period = random.Random(seed), 60.0 / BPM / 24
    made, began = [], time.monotonic()
    for index in range(stalls):
        time.sleep(max(0.0, began + seconds * (index + 1) / (stalls + 1) - time.monotonic()))
        length = rng.uniform(0.5, 1.6)
        stopped = time.perf_counter()
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(length * period)
        os.kill(server.pid, signal.SIGCONT)
        made.append((time.perf_counter() - stopped) / period)
    time.sleep(max(0.0, began + seconds - time.monotonic()))
    return made


def one_run(number: int, seconds: float, source: str, scratch: Path, server: subprocess.Popen, stalls: int = 0) -> bool:
    name, listen = f"LoFi Clock Check {number}", f"clock-check-listen-{number}"
    dump_path = scratch / f"dump-{number}.txt"
    with open(dump_path, "w") as dump_file:
        dump = subprocess.Popen(["stdbuf", "-oL", "jack_midi_dump", "-a", listen], stdout=dump_file,
                                stderr=subprocess.DEVNULL)
    engine = subprocess.Popen(
        [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--name", name, "--clock", "midi",
         "--model", str(ROOT / "exported_models" / "lofi-seed.json"), "--response-bars", "64", "--seed", "1",
         "--seed-midi", str(ROOT / "examples" / "continuation-grid.mid")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clock, sent, made, wall = None, None, [], None
    try:
        wait_for(f"{name}:{name}")
        wait_for(f"{listen}:input")
        jack("jack_connect", f"{name} Out:{name}", f"{listen}:input")
        if source == "jack_midi_clock":
            jack("jack_transport", input="stop\nlocate 0\nquit\n")
            clock = subprocess.Popen(["jack_midi_clock", "-b", str(BPM), "-B", f"{name}:{name}", f"{listen}:input"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for("jack_midi_clock:mclk_out")
            time.sleep(1.0)  # connected to both: then the transport rolls (Start, ticks)
            jack("jack_transport", input="play\nquit\n")
            made = hold_up(server, seconds, stalls, number)
            jack("jack_transport", input="stop\nquit\n")
        else:
            sender = f"clock-check-sender-{number}"
            log = scratch / f"sent-{number}.json"
            wall = WallListener(f"clock-check-wall-{number}")
            clock = subprocess.Popen([sys.executable, str(ROOT / "tests" / "clock_sender.py"), sender, "--bpm", str(BPM),
                                      "--seconds", str(seconds), "--seed", str(number), "--log", str(log)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if clock.stdout.readline().strip() != "ready":
                raise SystemExit("error: the clock sender did not start")
            for port in (f"{name}:{name}", f"{listen}:input", f"{wall.name}:{wall.name}"):
                jack("jack_connect", f"{sender}:{sender}", port)
            jack("jack_connect", f"{name} Out:{name}", f"{wall.name}:{wall.name}")
            clock.stdin.write("go\n")
            clock.stdin.flush()
            made = hold_up(server, seconds, stalls, number)
            clock.stdout.readline()  # done
            sent = json.loads(log.read_text())
        time.sleep(0.5)
    finally:
        if clock is not None:
            stop(clock)
        stop(engine)
        out, err = engine.communicate()
        time.sleep(0.2)
        stop(dump, signal.SIGTERM)
        if wall is not None:
            wall.close()
    # the sender's clock: the wall clock for ``faulty``, JACK's sample clock for jack_midi_clock
    positions, seen, total = onset_positions(wall.events if wall is not None else read_dump(dump_path.read_text()))
    line = re.search(r"MIDI clock: .*", out)
    engine_said = line.group(0) if line else (out + err).strip()[-300:]
    if len(positions) < 3:
        print(f"run {number}: {seen} ticks, {len(positions)} onsets heard: nothing to judge ({engine_said})")
        return False
    gaps = [b - a for a, b in zip(positions, positions[1:])]
    off = [abs(gap - 12 * round(gap / 12)) for gap in gaps]
    phase = [position - 12 * round(position / 12) for position in positions]
    bad = sum(each > QUARTER_TICK for each in off)
    astray = sum(abs(each) > QUARTER_TICK for each in phase)
    sender_said = (f"; the sender sent {len(sent['duplicated'])} ticks twice and lost {len(sent['dropped'])}"
                   if sent else "")
    if made:
        sender_said += f"; server stopped {len(made)} times, for {', '.join(f'{each:.2f}' for each in made)} periods"
    print(f"run {number}: {len(positions)} onsets; listener saw {seen} of {total} ticks; gaps off a multiple of 12 "
          f"ticks by over a quarter tick: {bad} of {len(gaps)} (largest {max(off):.3f}); onsets over a quarter tick "
          f"from their step tick (counted from Start): {astray}; onsets after their step tick: median "
          f"{statistics.median(phase):+.3f}, range {min(phase):+.3f} to {max(phase):+.3f} ticks; "
          f"engine: {engine_said}{sender_said}")
    for position, each in zip(positions, phase):
        if abs(each) > QUARTER_TICK:
            print(f"    onset at tick {position:.2f} of the clock: {each:+.3f} ticks from step {round(position / 12)}")
    return bad == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--source", choices=("jack_midi_clock", "faulty"), default="jack_midi_clock")
    parser.add_argument("--stalls", type=int, default=0, help="stop the JACK server this many times a run, each "
                                                                 "time for 0.5 to 1.6 tick periods")
    parser.add_argument("--realtime-server", action="store_true",
                        help="run JACK's server with real-time scheduling, as a DAW's JACK runs (by default it "
                             "runs as ./run.sh starts it, without: on a loaded machine it then falls behind)")
    args = parser.parse_args()
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    with tempfile.TemporaryDirectory() as scratch:
        with open(Path(scratch) / "jackd.log", "w") as log:
            scheduling = "--realtime" if args.realtime_server else "--no-realtime"
            server = subprocess.Popen(["jackd", "-n", SERVER, scheduling, "-d", "dummy", "-r", "48000", "-p", "64"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        os.environ["JACK_DEFAULT_SERVER"] = SERVER
        try:
            if jack("jack_wait", "-s", SERVER, "-w", "-t", "10").returncode != 0:
                said = [line for line in (Path(scratch) / "jackd.log").read_text().splitlines()
                        if re.search(r"fail|error|cannot|too many", line, re.IGNORECASE)]
                print(f"error: the JACK server did not start ({'; '.join(said) or 'jackd said nothing'})",
                      file=sys.stderr)
                return 2
            results = [one_run(number, args.seconds, args.source, Path(scratch), server, args.stalls)
                       for number in range(1, args.runs + 1)]
        finally:
            stop(server, signal.SIGTERM)
    stalled = f", {args.stalls} stalls a run" if args.stalls else ""
    print(f"{sum(results)} of {len(results)} runs with every gap a whole number of steps ({args.source}{stalled}, server "
          f"{scheduling[2:]}, load average {os.getloadavg()[0]:.1f})")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
