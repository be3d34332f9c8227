"""Live timing benchmark through real MIDI ports (JACK by default).

Starts ``lofi-live run`` seeded so that the model plays every grid step, listens to its output from
another JACK client for ``--seconds``, then stops it with SIGINT and prints:

* per-step inference latency (median, p99), measured by the engine around each look-ahead step;
* the engine's send error against the ideal grid (median, p99): when the note-on left the process;
* the arrival error at the listener against the best-fitting ideal grid (median, p99): what a DAW
  sees, including the MIDI system's own delivery jitter; with ``--swing PCT`` the ideal grid is the
  swung one (off-beats PCT % through their beat), as is the engine's own send error;
* late (skipped) steps, and whether every note-on got its note-off;
* the engine's memory (RSS) at the start and the end, for soak runs.

Usage::

    python benchmarks/live_bench.py [--model exported_models/lofi] [--bpm 120] [--seconds 20]
    python benchmarks/live_bench.py --bpm 180 --seconds 600 --play     # the 10-minute soak (issue 6)
    python benchmarks/live_bench.py --swing 66                          # against the swung grid

``--play`` also plays a phrase into the engine every two bars, so input handling is exercised.

Without ``--model`` and without ``exported_models/lofi.json`` it builds the tiny test model
(tests/model_fixtures.py, needs the ``onnx`` package). Needs a running JACK server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jack_helpers import (  # noqa: E402
    Listener,
    Player,
    connect,
    engine_command,
    engine_ports,
    grid_errors_fit,
    onset_times,
    swung_grid_errors_fit,
    percentile,
    still_sounding,
    unique,
    unmatched_note_ons,
    wait_for_ports,
)

from lofi_live.midi.files import NoteEvent, write_midi  # noqa: E402


def _model(arg: str | None, folder: Path) -> Path:
    if arg:
        return Path(arg)
    default = ROOT / "exported_models" / "lofi.json"
    if default.exists():
        return default
    from model_fixtures import build_model

    print("no exported_models/lofi.json: using the tiny test model", file=sys.stderr)
    return build_model(folder, units=(256,))


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 1e6
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return None


def _run_for(args, proc: subprocess.Popen, player, rss: list[float]) -> None:
    """Wait ``args.seconds``, sampling the engine's memory and playing phrases when asked."""
    import mido

    start = time.perf_counter()
    bar = 4 * 60.0 / args.bpm
    next_phrase = start + 1.0
    while (now := time.perf_counter()) - start < args.seconds:
        value = _rss_mb(proc.pid)
        if value is not None:
            rss.append(value)
        if player is not None and now >= next_phrase:
            for pitch in (60, 64, 67):
                player.port.send(mido.Message("note_on", note=pitch, velocity=70))
            time.sleep(bar / 8)
            for pitch in (60, 64, 67):
                player.port.send(mido.Message("note_off", note=pitch))
            next_phrase += 2 * bar
        time.sleep(min(1.0, max(0.0, next_phrase - time.perf_counter())) if player else 1.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", default="jack", choices=["jack"])
    parser.add_argument("--simulate-slow-model", type=float, default=0.0, metavar="MS")
    parser.add_argument("--play", action="store_true", help="play a phrase into the engine every two bars")
    parser.add_argument("--swing", type=float, default=50.0, metavar="PCT", help="the engine's --swing (default 50, straight)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model(args.model, folder / "model")
        seed = write_midi(folder / "seed.mid", [("seed", [NoteEvent(i * 0.5, 0.45, p) for i, p in
                                                          enumerate([60, 63, 67, 70, 72, 70, 67, 63])])], bpm=args.bpm)
        name = unique("LoFi Bench")
        command = engine_command(model, name, "--bpm", f"{args.bpm:g}", "--mode", "accompany", "--seed-midi", str(seed),
                                 "--response-bars", "1000", "--simulate-slow-model", f"{args.simulate_slow_model:g}",
                                 "--swing", f"{args.swing:g}")
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        listener = player = None
        rss: list[float] = []
        try:
            engine_in, engine_out = engine_ports(name)
            wait_for_ports([engine_in, engine_out], proc=proc)
            listener = Listener("mido.backends.rtmidi/UNIX_JACK")
            connect(engine_out, listener.jack_name)
            if args.play:
                player = Player("mido.backends.rtmidi/UNIX_JACK")
                connect(player.jack_name, engine_in)
            _run_for(args, proc, player, rss)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            time.sleep(0.1)
            events = listener.snapshot()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            if listener is not None:
                listener.close()
            if player is not None:
                player.close()

    if proc.returncode != 0:
        print(out, err, file=sys.stderr)
        return 1
    found = re.search(
        r"stopped after (\d+) steps \((\d+) played, (\d+) late\); inference median ([0-9.]+) ms, p99 ([0-9.]+) ms; "
        r"emission error median ([0-9.]+) ms, p99 ([0-9.]+) ms", out)
    if not found:
        print(out, err, file=sys.stderr)
        return 1
    steps, played, late = (int(found.group(i)) for i in (1, 2, 3))
    inf_med, inf_p99, send_med, send_p99 = (float(found.group(i)) for i in (4, 5, 6, 7))
    grid = 60.0 / args.bpm / 2
    onsets = onset_times(events, channel=0)
    # the first step may be the seed's start-up
    arrival = grid_errors_fit(onsets[1:], grid) if args.swing == 50 else swung_grid_errors_fit(onsets[1:], args.bpm, args.swing)
    provider = re.search(r"on provider (\w+)", out)
    result = {
        "bpm": args.bpm, "swing": args.swing, "seconds": args.seconds, "model": str(model), "provider": provider.group(1) if provider else "?",
        "steps": steps, "played": played, "late_steps": late,
        "inference_median_ms": inf_med, "inference_p99_ms": inf_p99,
        "send_error_median_ms": send_med, "send_error_p99_ms": send_p99,
        "arrival_onsets": len(onsets),
        "arrival_error_median_ms": round(statistics.median(arrival) * 1e3, 3) if arrival else None,
        "arrival_error_p99_ms": round(percentile(arrival, 99) * 1e3, 3) if arrival else None,
        "note_ons_without_off_at_listener": len(unmatched_note_ons(events)),
        "left_sounding_after_all_notes_off": len(still_sounding(events)),
        "load_average": os.getloadavg()[0],
        "rss_start_mb": round(rss[0], 1) if rss else None,
        "rss_end_mb": round(rss[-1], 1) if rss else None,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    swing = f", swing {args.swing:g}" if args.swing != 50 else ""
    print(f"live bench: {args.seconds:g} s at {args.bpm:g} BPM ({grid * 1e3:.0f} ms grid{swing}), model {model.name} on {result['provider']}")
    print(f"  steps {steps}, played {played}, late/skipped {late}")
    print(f"  inference per step:           median {inf_med:.3f} ms   p99 {inf_p99:.3f} ms")
    print(f"  engine send vs ideal grid:    median {send_med:.3f} ms   p99 {send_p99:.3f} ms")
    if arrival:
        print(f"  arrival at listener vs grid:  median {result['arrival_error_median_ms']:.3f} ms   "
              f"p99 {result['arrival_error_p99_ms']:.3f} ms   ({len(onsets)} onsets, through JACK)")
    print(f"  note-ons without note-off at the listener: {result['note_ons_without_off_at_listener']}, "
          f"left sounding after All Notes Off: {result['left_sounding_after_all_notes_off']}")
    if rss:
        print(f"  engine memory: {rss[0]:.1f} MB after start, {rss[-1]:.1f} MB at the end (max {max(rss):.1f} MB)")
    print(f"  load average {result['load_average']:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
