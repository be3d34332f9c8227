"""A run folder of ``lofi-train fit``: ``run.json``, checkpoints, ``history.csv`` and ``curves.png``.

``fit`` writes a run folder and resumes it; ``export``, ``sweep`` and the distributed training step read
it. What a run folder holds, and how each part is read and checked, lives here so every command reads
it the same way (docs/TRAINING.md).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from lofi_live.errors import LofiError
from training.presets import custom_objects

RUN_FORMAT = 1
CHECKPOINT_RE = re.compile(r"^weights-improvement-(\d+)-([0-9.]+|nan|inf)\.keras$")


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's improvement checkpoints, oldest epoch first."""
    found = [p for p in run_dir.glob("weights-improvement-*.keras") if CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def checkpoint_epoch(path: Path) -> int | None:
    match = CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def load_run(run_dir: Path) -> dict[str, Any]:
    """Read a run directory's ``run.json``; a missing or broken one is a one-line error."""
    if not run_dir.exists():
        raise LofiError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise LofiError(f"{run_dir}: not a run folder (expected a folder made by lofi-train fit)")
    file = run_dir / "run.json"
    if file.exists() and not file.is_file():
        raise LofiError(f"{file}: not a regular file, {run_dir} is not a run folder made by lofi-train fit")
    try:
        run = json.loads(file.read_text())
    except FileNotFoundError:
        raise LofiError(f"{file}: missing, {run_dir} is not a run folder made by lofi-train fit") from None
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:
        raise LofiError(f"{file}: corrupt run file ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    needed = ("vocabulary", "window", "preset", "input_encoding", "options", "epochs_done")
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT or any(k not in run for k in needed):
        raise LofiError(f"{file}: not a lofi-train run file (needs format {RUN_FORMAT} and {', '.join(needed)})")
    return run


def best_checkpoint(run_dir: Path) -> Path:
    """The last improvement checkpoint (checkpoints are only written when the monitored loss improves)."""
    found = checkpoints(run_dir)
    if not found:
        raise LofiError(f"{run_dir}: run folder holds no weights-improvement-*.keras checkpoint")
    return found[-1]


def load_model(path: Path, compile: bool = False) -> Any:
    """Load a ``.keras`` checkpoint (with its optimizer state when ``compile``); a bad one is a one-line error."""
    from training.tfsetup import quiet_keras

    keras = quiet_keras()
    if not path.is_file():
        raise LofiError(f"{path}: no such checkpoint file")
    try:
        return keras.models.load_model(path, compile=compile, custom_objects=custom_objects())
    except Exception as error:  # noqa: BLE001 - Keras raises many types on a bad archive
        raise LofiError(f"{path}: cannot load Keras checkpoint ({str(error).splitlines()[0][:200]})") from None


def _history_rows(file: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``history.csv``'s header and rows as text; a file whose epochs count from 0 (written before they
    counted from 1, as the checkpoint names do) is read renumbered from 1."""
    try:
        with file.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, csv.Error) as error:
        raise LofiError(f"{file}: cannot be read ({error})") from None
    if rows and _number(rows[0].get("epoch")) == 0:
        rows = [{**row, "epoch": str(int(float(row["epoch"])) + 1)} for row in rows]
    return header, rows


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of rows (numbers, epochs from 1), empty when there is none yet."""
    file = run_dir / "history.csv"
    if not file.exists():
        return []
    return [{k: _number(v) for k, v in row.items() if _number(v) is not None} for row in _history_rows(file)[1]]


def renumber_history(run_dir: Path) -> None:
    """Rewrite a ``history.csv`` whose epochs count from 0 with epochs from 1, before a resume appends to it."""
    file = run_dir / "history.csv"
    if not file.exists():
        return
    header, rows = _history_rows(file)
    temporary = file.with_name(file.name + ".tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, file)


def _number(text: str | None) -> float | None:
    """A CSV cell as a float; Keras writes ``NA`` for a metric it did not have."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def plot_curves(history: Sequence[dict[str, float]], target: Path) -> None:
    """Loss and accuracy per epoch, training vs validation, as a PNG.

    A sequence preset's history also has ``last_loss`` / ``last_accuracy`` (last window position
    only); they are drawn dashed next to the all-position curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        series = ((metric, "training", "-"), (f"val_{metric}", "validation", "-"),
                  (f"last_{metric}", "training, last position", "--"),
                  (f"val_last_{metric}", "validation, last position", "--"))
        for key, label, style in series:
            if history and all(key in row for row in history):
                axis.plot(epochs, [row[key] for row in history], marker="o", linestyle=style, label=label)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"training curves: {target.parent.name}")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def write_json(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


