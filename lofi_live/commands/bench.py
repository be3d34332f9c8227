"""``lofi-live bench``: per-step decision latency, offline generation time, live memory and start-up.

For the default model (``--model``) and, when found, a model exported with the ``seed`` preset
(``--seed-model``, default the shipped ``exported_models/lofi-seed``), it measures in one run:

* ``keras_window``: the seed's approach, ``model.predict(window, verbose=0)`` on the Keras checkpoint
  the export came from (``training.run``/``training.checkpoint`` in the model JSON). TensorFlow is
  imported lazily inside :func:`keras_window` only (the one place in ``lofi_live`` allowed to); when it
  is not installed or the checkpoint is gone, the entry is absent and a note says why. The architecture
  is never rebuilt from the JSON: only the exported checkpoint is guaranteed to hold the ONNX weights;
* ``onnx_window``: the window graph on one window (batch 1), what a stateless runtime would do;
* ``onnx_step``: one decision of the live path: :meth:`Stepper.advance` plus :meth:`Sampler.choose`;
* ``onnx_reset``: :meth:`Stepper.reset` on a whole window (the live engine's rebuild after the player);
* ``generate_500_s``: 500 tokens offline (seed window, stepper, sampler, ``.mid`` written), in the model's
  tokenization (``tokens``: a grid model's holds and rests are written as durations);
* ``rss_mb`` and ``first_note_s``: a real ``lofi-live run --backend jack --seed-midi FILE --quiet``
  process playing into a JACK port opened here: the time from spawning it to the first note-on
  received, and its peak resident memory (``VmHWM``). A JACK server (dummy driver) is started for the
  measurement when none runs and ``jackd`` is installed, and stopped afterwards; without JACK the
  entries are absent with a note.

Each entry is ``{"median_ms", "p99_ms"}``; ``ratios`` compares them within the same run, ``targets``
checks issue 5's goals (step p99 <= 1 ms, 500 steps <= 0.5 s, >= 100x Keras, RSS <= 300 MB, first note
<= 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lofi_live.errors import LofiError
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.midi.ports import jack_running
from lofi_live.commands.bench_figures import WARMUP, sample_windows, timing_stats
from lofi_live.commands.bench_keras import keras_window  # noqa: F401 - also imported from here by tests

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STEPS = 2000
KERAS_CALLS = 30
#: Tempo of the live start-up run: fast, so that a first note sent before the port was connected costs at
#: most one short grid step (0.1 s) in ``first_note_s``, which is therefore an upper bound.
LIVE_BPM = 300
#: The shipped model of the seed article's tokens, measured beside the default one.
SEED_MODEL = "lofi-seed"
TARGETS = {"onnx_step_p99_ms": 1.0, "generate_500_s": 0.5, "keras_over_onnx_step": 100.0, "rss_mb": 300.0, "first_note_s": 2.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--seed-model", help=f"a model exported with the seed preset (default: the shipped {SEED_MODEL})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"timed decisions per measurement (default {DEFAULT_STEPS})")
    parser.add_argument("--keras-calls", type=int, default=KERAS_CALLS, help=f"timed Keras predict calls (default {KERAS_CALLS}; each takes ~0.1 s)")
    parser.add_argument("--keras-checkpoint", metavar="FILE", help="the .keras checkpoint the default model was exported from (default: from its JSON)")
    parser.add_argument("--seed-keras-checkpoint", metavar="FILE", help="the same for the seed-preset model")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras measurement")
    parser.add_argument("--no-live", action="store_true", help="skip the live process (RSS and first note)")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS, help="ONNX Runtime provider (default auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


class _NoGC:
    """Garbage collection paused while timing (a collection is not the model's latency)."""

    def __enter__(self):
        import gc

        self._was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        import gc

        if self._was:
            gc.enable()


def onnx_window(model, steps: int) -> dict:
    """The window graph on one window per call (batch 1)."""
    windows = sample_windows(model, min(steps, 256))
    times = []
    budget = time.perf_counter() + 20
    with _NoGC():
        _window_loop(model, windows, steps, times, budget)
    return timing_stats(times)


def _window_loop(model, windows, steps, times, budget) -> None:
    for i in range(steps):
        started = time.perf_counter()
        model.window_probs(windows[i % len(windows)][None, :])
        times.append(time.perf_counter() - started)
        if time.perf_counter() > budget and len(times) > 3 * WARMUP:
            break


def onnx_step(model, steps: int) -> dict:
    """One live decision: stepper.advance(previous choice) + sampler.choose (default settings)."""
    from lofi_live.commands.generate import make_sampler
    from lofi_live.model.sampling import DEFAULT_MAX_REPEAT, DEFAULT_TEMPERATURE, DEFAULT_TOP_K

    stepper = model.stepper()
    sampler = make_sampler(model, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, 0, DEFAULT_MAX_REPEAT)
    probs = stepper.reset(sample_windows(model, 1)[0])
    times = []
    with _NoGC():
        for _ in range(steps + WARMUP):
            started = time.perf_counter()
            token = sampler.choose(probs)
            probs = stepper.advance(token)
            times.append(time.perf_counter() - started)
    return timing_stats(times)


def onnx_reset(model, calls: int = 60) -> dict:
    """Rebuilding the state from a whole window (what the live engine does after the player's notes)."""
    stepper = model.stepper()
    windows = sample_windows(model, calls)
    times = []
    with _NoGC():
        for window in windows:
            started = time.perf_counter()
            stepper.reset(window)
            times.append(time.perf_counter() - started)
    return timing_stats(times[5:])


def generate_500(model) -> float:
    """Seconds for 500 tokens offline: seed window, stepper, sampler, MIDI file written, as ``generate`` does
    it for the model's tokenization (a grid model's durations and grammar)."""
    from lofi_live.commands.generate import generate_indices, make_sampler, write_tokens_midi
    from lofi_live.model.sampling import DEFAULT_MAX_REPEAT, DEFAULT_TEMPERATURE, DEFAULT_TOP_K

    best = None
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(3):  # best of three: the machine is shared
            started = time.perf_counter()
            sampler = make_sampler(model, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, 1, DEFAULT_MAX_REPEAT)
            indices = generate_indices(model, sample_windows(model, 1)[0], 500, sampler)
            write_tokens_midi(Path(folder) / "bench.mid", model.decode(indices), grid_beats=model.grid_beats,
                              kind=model.tokens)
            elapsed = time.perf_counter() - started
            best = elapsed if best is None else min(best, elapsed)
    return round(best, 4)


# --------------------------------------------------------------------------------------------
# The live process


def _start_jack() -> subprocess.Popen | None:
    """A private JACK server (its own name, so no other client ever meets it); sets JACK_DEFAULT_SERVER."""
    if not shutil.which("jackd"):
        return None
    name = f"lofi-bench-{os.getpid()}"
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    server = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "64"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["JACK_DEFAULT_SERVER"] = name
    deadline = time.monotonic() + 10
    while not jack_running():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            os.environ.pop("JACK_DEFAULT_SERVER", None)
            return None
        time.sleep(0.1)
    return server


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001
        return None


def live_start(model, timeout: float = 20.0) -> tuple[dict, str | None]:
    """Spawn ``lofi-live run`` on JACK; (``{"first_note_s", "rss_mb"}``, note when not measurable)."""
    try:
        import importlib

        importlib.import_module("lofi_live.commands.run")
    except Exception as error:  # noqa: BLE001
        return {}, f"live start-up not measured: the run command is unavailable ({error})"
    import mido

    server = None
    if not jack_running():
        server = _start_jack()
        if server is None:
            return {}, "live start-up not measured: no JACK server (install jackd2)"
    backend_name = "mido.backends.rtmidi/UNIX_JACK"
    name = f"lofi-bench {os.getpid()}"
    received: list[float] = []
    lock = threading.Lock()

    def on_message(message) -> None:
        if message.type == "note_on" and message.velocity > 0:
            with lock:
                received.append(time.perf_counter())

    folder = tempfile.mkdtemp(prefix="lofi-bench-")
    process = None
    try:
        try:
            port = mido.Backend(backend_name).open_input(name, virtual=True, client_name=name, callback=on_message)
        except Exception as error:  # noqa: BLE001
            return {}, f"live start-up not measured: cannot open a JACK port ({error})"
        from lofi_live.commands.generate import write_tokens_midi

        seed = write_tokens_midi(Path(folder) / "seed.mid", model.decode(sample_windows(model, 1)[0]), 90,
                                 model.grid_beats, model.tokens)
        engine = f"lofi-bench-live {os.getpid()}"
        engine_out = f"{engine} Out:{engine}"  # the run command's virtual output port on JACK
        command = [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--model", str(model.path),
                   "--seed-midi", str(seed), "--quiet", "--name", engine, "--duration", "5", "--bpm", str(LIVE_BPM)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        peak = 0.0
        first = None
        connected = False
        deadline = started + timeout
        while time.perf_counter() < deadline:
            rss = _peak_rss_mb(process.pid)
            if rss:
                peak = max(peak, rss)
            if not connected:
                listing = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10).stdout.splitlines()
                if engine_out in listing:
                    subprocess.run(["jack_connect", engine_out, f"{name}:{name}"], capture_output=True, timeout=10)
                    connected = True
            with lock:
                if received and first is None:
                    first = received[0] - started
            if process.poll() is not None or (first is not None and time.perf_counter() > started + first + 1.0):
                break
            time.sleep(0.01)
        if process.poll() is None:
            process.terminate()
        _, err = process.communicate(timeout=10)
        port.close()
        result: dict = {}
        if first is not None:
            result["first_note_s"] = round(first, 3)
        if peak:
            result["rss_mb"] = round(peak, 1)
        if first is None:
            line = (err or "").strip().splitlines()[-1:] or ["no output"]
            return result, f"live process played no note (exit {process.returncode}: {line[0][:160]})"
        return result, None
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
            os.environ.pop("JACK_DEFAULT_SERVER", None)


# --------------------------------------------------------------------------------------------


def measure(path, steps: int, keras_calls: int, provider: str, keras: bool, live: bool,
            checkpoint: str | None = None) -> tuple[dict, list[str]]:
    from lofi_live.model.loader import Model

    model = Model.load(path, provider=provider)
    notes: list[str] = []
    result: dict = {"model": model.name, "preset": model.meta.get("preset"), "tokens": model.tokens, "provider": model.provider}
    if keras:
        stats, note = keras_window(model, keras_calls, checkpoint)
        if stats:
            result["keras_window"] = stats
            result["keras_max_abs_diff_vs_onnx"] = model.meta["_bench"]["keras_max_abs_diff_vs_onnx"]
        if note:
            notes.append(note)
    result["onnx_window"] = onnx_window(model, min(steps, 1000))
    result["onnx_step"] = onnx_step(model, steps)
    result["onnx_reset"] = onnx_reset(model)
    if not model.has_step_graph:
        notes.append(f"{model.name}: no step graph; onnx_step runs the window graph each step")
    result["generate_500_s"] = generate_500(model)
    if live:
        figures, note = live_start(model)
        result.update(figures)
        if note:
            notes.append(note)
    step = result["onnx_step"]["median_ms"]
    ratios = {"onnx_window_over_onnx_step": round(result["onnx_window"]["median_ms"] / step, 1)}
    if "keras_window" in result:
        ratios["keras_over_onnx_step"] = round(result["keras_window"]["median_ms"] / step, 1)
        ratios["keras_over_onnx_window"] = round(result["keras_window"]["median_ms"] / result["onnx_window"]["median_ms"], 1)
    result["ratios"] = ratios
    return result, notes


def targets(result: dict) -> dict:
    checks = {
        "onnx_step_p99_ms": result["onnx_step"]["p99_ms"] <= TARGETS["onnx_step_p99_ms"],
        "generate_500_s": result["generate_500_s"] <= TARGETS["generate_500_s"],
    }
    if "keras_over_onnx_step" in result["ratios"]:
        checks["keras_over_onnx_step"] = result["ratios"]["keras_over_onnx_step"] >= TARGETS["keras_over_onnx_step"]
    for key in ("rss_mb", "first_note_s"):
        if key in result:
            checks[key] = result[key] <= TARGETS[key]
    return checks


def _seed_model_path(arg: str | None) -> Path | None:
    """``--seed-model``, else the shipped :data:`SEED_MODEL` (the seed article's preset) when it is there."""
    from lofi_live.model.loader import resolve_model_path, shipped_models_dir

    if arg:
        return resolve_model_path(arg)
    default = shipped_models_dir() / f"{SEED_MODEL}.json"
    return default if default.is_file() else None


def run(args: argparse.Namespace) -> int:
    import platform

    if args.steps < 50:
        raise LofiError("--steps must be at least 50")
    result, notes = measure(args.model, args.steps, args.keras_calls, args.provider, not args.no_keras, not args.no_live,
                            args.keras_checkpoint)
    result["targets"] = targets(result)
    seed_path = _seed_model_path(args.seed_model)
    if seed_path is not None:
        seed, seed_notes = measure(seed_path, max(200, args.steps // 4), max(10, args.keras_calls // 2), args.provider,
                                   not args.no_keras, not args.no_live, args.seed_keras_checkpoint)
        result["seed_preset"] = seed
        notes += [f"seed preset: {note}" for note in seed_notes]
    else:
        notes.append(f"no seed-preset model (exported_models/{SEED_MODEL} or --seed-model): seed_preset not measured")
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    result["notes"] = notes
    if args.json:
        print(json.dumps(result))
        return 0
    _print_table(result)
    return 0


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for label, figures in (("default model", result), ("seed preset", result.get("seed_preset"))):
        if not figures:
            continue
        table = Table(title=f"{label}: {figures['model']} ({figures.get('preset')}) on {figures['provider']}")
        table.add_column("measure")
        table.add_column("median", justify="right")
        table.add_column("p99", justify="right")
        for key in ("keras_window", "onnx_window", "onnx_step", "onnx_reset"):
            if key in figures:
                table.add_row(key, f"{figures[key]['median_ms']:.3f} ms", f"{figures[key]['p99_ms']:.3f} ms")
            else:
                table.add_row(key, "n/a", "n/a")
        table.add_row("500 steps offline", f"{figures['generate_500_s']:.3f} s", "")
        for key, unit in (("rss_mb", "MB"), ("first_note_s", "s")):
            table.add_row(key, f"{figures[key]} {unit}" if key in figures else "n/a", "")
        for key, value in figures["ratios"].items():
            table.add_row(key, f"{value}x", "")
        console.print(table)
    checks = result["targets"]
    console.print("targets: " + ", ".join(f"{key} {'ok' if ok else 'MISSED'}" for key, ok in checks.items()))
    for note in result["notes"]:
        console.print(f"note: {note}")
