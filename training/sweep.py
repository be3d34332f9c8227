"""``lofi-train sweep``: the seed's optional step, a continuation from every checkpoint of a run.

Listening to (and counting) what each epoch's weights generate shows when a model stops looping on
one chord and when it starts to copy its training data, which the loss alone does not say. Every
checkpoint continues the same seed window by argmax, as the seed did, so rows compare like with like.
A checkpoint takes seconds to minutes (one Keras call per token), so each one is announced before it
starts, and on a terminal a bar counts its tokens.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.midi.files import write_midi
from lofi_live.tokens.notes import longest_run, tokens_to_notes
from lofi_live.model.format import encode_inputs
from training.runs import checkpoints, load_model, load_run
from training.presets import last_position


def continue_argmax(
    model: Any, seed: Sequence[int], steps: int, encoding: str, vocab: int, on_token: Callable[[], None] = lambda: None
) -> list[int]:
    """The seed's generate loop: predict the next token from the last window, append it, slide.

    ``on_token`` is called after each token (progress).
    """
    window = list(seed)
    out: list[int] = []
    for _ in range(steps):
        inputs = encode_inputs(np.asarray([window]), encoding, vocab)
        index = int(np.argmax(np.asarray(last_position(model, model(inputs, training=False)))[0]))
        out.append(index)
        window = window[1:] + [index]
        on_token()
    return out


def _continue_with_bar(model: Any, seed: Sequence[int], steps: int, encoding: str, vocab: int) -> list[int]:
    """:func:`continue_argmax` under a transient token bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("generating", total=steps)
        return continue_argmax(model, seed, steps, encoding, vocab, lambda: bar.advance(task))


def sweep(run_dir: Path, steps: int, bpm: float, progress: bool = False) -> Path:
    """Write ``sweep/<checkpoint>.mid`` per checkpoint and ``sweep.csv``; returns the CSV path.

    Each checkpoint is announced on stdout before its work starts; ``progress`` adds a token bar.
    """
    run = load_run(run_dir)
    found = checkpoints(run_dir)
    if not found:
        raise LofiError(f"{run_dir}: run folder holds no weights-improvement-*.keras checkpoint")
    vocabulary = run["vocabulary"]
    seed_windows = run.get("seed_windows") or []
    if not seed_windows:
        raise LofiError(f"{run_dir / 'run.json'}: holds no seed window to continue")
    out_dir = run_dir / "sweep"
    rows = []
    for number, checkpoint in enumerate(found, 1):
        print(f"[{number}/{len(found)}] {checkpoint.name}: continuing the seed window for {steps} tokens",
              flush=True)
        model = load_model(checkpoint)
        generate = _continue_with_bar if progress else continue_argmax
        indices = generate(model, seed_windows[0], steps, run["input_encoding"], len(vocabulary))
        tokens = [vocabulary[i] for i in indices]
        notes = tokens_to_notes(tokens, run.get("tokens", "seed"))
        write_midi(out_dir / f"{checkpoint.stem}.mid", [("lofi-live", notes)], bpm=bpm)
        rows.append({"checkpoint": checkpoint.name, "tokens": " ".join(tokens),
                     "distinct_tokens": len(set(tokens)), "longest_repeat": longest_run(tokens)})
        print(f"[{number}/{len(found)}] {checkpoint.name}: {len(set(tokens))} distinct tokens, "
              f"longest repeat {longest_run(tokens)}", flush=True)
    table = run_dir / "sweep.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder made by lofi-train fit")
    parser.add_argument("--steps", type=int, default=100, help="tokens generated per checkpoint (default 100)")
    parser.add_argument("--bpm", type=float, default=80.0, help="tempo written into the .mid files (default 80)")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.bpm <= 0:
        raise LofiError("--steps must be at least 1 and --bpm positive")
    table = sweep(args.run_dir, args.steps, args.bpm, progress=sys.stderr.isatty())
    print(f"{table}: one row per checkpoint; .mid files in {args.run_dir / 'sweep'}")
    return 0
