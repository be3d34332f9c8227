"""Does the control surface disturb the grid? The grid error with the page open and a knob moving, in one run.

Runs the live engine as ``lofi-live run --web 0`` does (the shipped model, real JACK ports, the real-time
priority where the system allows it, the surface's server on its own thread at normal priority) in
accompany mode, seeded, with a metronome on channel 10, so a note leaves on most grid steps; a listener
hears its output and headless Chromium (Debian's, through Selenium) shows the page or nothing. Then
``--rounds`` times, alternately:

* without the page: Chromium shows ``about:blank`` for ``--seconds``;
* with the page: Chromium shows the surface (its roll redrawn from the event stream) and the page itself
  moves the temperature knob 20 times a second (``POST /api/control``, the page's own sending path).

For each condition it prints the engine's send error against the ideal grid (when each step's notes left
the process; median and p99), the ratio of the two p99s (the target is <= 1.2), the arrival error at
the listener against the best-fitting grid (what a DAW sees, with the MIDI system's own delivery jitter
and this process's scheduling in it), how many controls the engine took, and the resident memory the
surface added. Needs a running JACK server, Chromium and chromedriver.

    python benchmarks/web_bench.py [--seconds 30] [--rounds 4] [--bpm 120]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jack_helpers import Listener, connect, engine_ports, grid_errors_fit, onset_times, percentile, still_sounding, unique  # noqa: E402

from lofi_live.commands.generate import make_sampler  # noqa: E402
from lofi_live.commands.run import _normal_priority  # noqa: E402
from lofi_live.live.engine import Engine, EngineConfig  # noqa: E402
from lofi_live.live.realtime import MAIN_PRIORITY, set_realtime  # noqa: E402
from lofi_live.live.web.server import open_surface  # noqa: E402
from lofi_live.midi.live_ports import MidiPorts  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.recording.session import Session  # noqa: E402
from lofi_live.tokens.midi import file_tokens  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run")
#: The page moves the temperature knob this often (ms): 20 times a second.
MOVE_MS = 50


def _browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _summary(errors: list[float]) -> str:
    return f"median {percentile(errors, 50) * 1e3:.3f} ms, p99 {percentile(errors, 99) * 1e3:.3f} ms ({len(errors)} onsets)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    parser.add_argument("--rounds", type=int, default=4, help="phases of each condition, alternated (default 4)")
    parser.add_argument("--bpm", type=float, default=120.0)
    args = parser.parse_args(argv)
    grid = 60.0 / args.bpm / 2
    model = Model.load(None)
    engine = Engine(model, make_sampler(model, 0.8, 8, 1, None), send=lambda m: None,
                    config=EngineConfig(bpm=args.bpm, mode="accompany", response_bars=64, metronome=9))
    engine.prime(file_tokens(ROOT / "examples" / "seed_held_chords.mid", model.tokens))
    name = unique("LoFi WebBench")
    ports = MidiPorts("jack", engine.on_message, name=name)
    engine.send = ports.send
    engine.session = Session(args.bpm, None, journal=False)
    listener = Listener("mido.backends.rtmidi/UNIX_JACK")
    connect(engine_ports(name)[1], listener.jack_name)
    realtime = set_realtime(MAIN_PRIORITY)  # as lofi-live run: the engine's threads real-time where allowed
    engine.start()
    with _normal_priority():  # this thread drives the browser at normal priority, as run's main thread waits
        rss_before = _rss_mb()
        surface = open_surface("0", engine, None, 1, None)
        phases = measure(engine, listener, surface.url, args, grid)
        rss_after = _rss_mb()
        surface.stop()
    engine.stop()
    engine.join(5)
    ports.close()
    time.sleep(0.3)
    left = still_sounding(listener.snapshot())
    listener.close()
    print(f"live engine at {args.bpm:g} BPM (real-time priority: {'yes' if realtime else 'no'}), "
          f"{args.rounds} x {args.seconds:g} s per condition, alternated:")
    p99 = {}
    for condition, (sent, heard, taken) in phases.items():
        p99[condition] = percentile(sent, 99)
        print(f"  {condition:28s} send error: median {percentile(sent, 50) * 1e3:.3f} ms, p99 {p99[condition] * 1e3:.3f} ms "
              f"({len(sent)} steps); at the listener: {_summary(heard)}; knob moves sent {taken}")
    without, with_page = p99.values()
    print(f"  send error p99 ratio (page open / without): {with_page / without:.2f} (target <= 1.2)")
    print(f"  process RSS {rss_before:.0f} MB before the surface, {rss_after:.0f} MB after the page phases "
          f"(+{rss_after - rss_before:.1f} MB)")
    print(f"  left sounding at the end: {left or 'nothing'}; late steps {engine.responder.lookahead.late_steps}")
    return 0


def measure(engine: Engine, listener: Listener, url: str, args, grid: float) -> dict[str, tuple[list[float], list[float], int]]:
    """Alternate the two conditions; for each: the engine's send errors, the listener's grid errors, the page's knob moves."""
    import tempfile

    browser = _browser(tempfile.mkdtemp(prefix="lofi-web-bench-"))
    phases: dict[str, tuple[list[float], list[float], int]] = {"without the page": ([], [], 0),
                                                                "page open, knob moved 20/s": ([], [], 0)}
    try:
        time.sleep(2)  # the model under way
        for _ in range(args.rounds):
            for condition, (sent, heard, _) in phases.items():
                with_page = condition.startswith("page")
                browser.get(url if with_page else "about:blank")
                time.sleep(1.0)  # loaded, the stream open
                if with_page:
                    browser.execute_script(f"""
                        window.benchMoves = 0;
                        window.benchTimer = setInterval(() => {{
                          window.benchMoves++;
                          control("temperature", 0.6 + 0.4 * Math.sin(window.benchMoves / 5));
                        }}, {MOVE_MS});""")
                first, start = len(engine.responder.emission_errors), time.perf_counter()
                time.sleep(args.seconds)
                errors, end = list(engine.responder.emission_errors), time.perf_counter()
                moves = browser.execute_script("clearInterval(window.benchTimer); return window.benchMoves;") if with_page else 0
                sent.extend(errors[first:])
                heard.extend(grid_errors_fit([t for t in onset_times(listener.snapshot()) if start <= t <= end], grid))
                phases[condition] = (sent, heard, phases[condition][2] + moves)
    finally:
        browser.quit()
    return phases


if __name__ == "__main__":
    sys.exit(main())
