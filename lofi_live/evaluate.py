"""``lofi-live evaluate``: next-token accuracy of a model on a folder of MIDI files, against baselines.

The files are tokenized with the training rules (:mod:`lofi_live.midi_tokens`: music21 when installed,
else the mido path) and concatenated in sorted file-name order into one stream, as the seed does. Every
position with ``window`` tokens before it is scored:

* ``top1`` / ``top5``: the true next token is the model's first / among its five likeliest;
* ``nll``: mean ``-log p(true token)``; a true token outside the model's vocabulary is a miss for every
  metric and counts ``-log(EPSILON)`` (about 27.6 nats), as does any probability below ``EPSILON``;
* ``network_top1`` (only for a model with a loop cache): top-1 of the network alone, without the
  cache's votes (lofi_live/loop_cache.py), so the two parts can be told apart;
* ``baseline_unigram_top1``: always predicting the most frequent training token;
* ``baseline_bigram_top1``: predicting the most frequent training successor of the previous token
  (``baselines.bigram_next``; the unigram's best when that token was never followed).

Input tokens outside the vocabulary are mapped to the nearest known token (as the live engine does).
The window graph runs in batches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lofi_live.errors import LofiError

#: Probability floor for the NLL (a target outside the vocabulary scores -log(EPSILON) = 27.63 nats).
EPSILON = 1e-12
BATCH = 512


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder of .mid/.midi files (searched recursively)")
    parser.add_argument("--model", help="exported model: NAME, NAME.json or NAME.onnx (default: exported_models/lofi)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--tokenizer", choices=("auto", "music21", "mido"), default="auto", help="auto = music21 when installed (default)")
    parser.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"), help="ONNX Runtime provider (default auto)")
    parser.add_argument("--held-out", action="store_true",
                        help="only the files the model held out for validation (data.validation_files in its JSON)")


def held_out_names(model) -> set[str]:
    """The relative paths of the files the model was validated on.

    Corpus file names are ``path`` for one corpus and ``label:path`` for several (see training), so
    each name is kept both whole and without its first ``label:``.
    """
    names = (model.meta.get("data") or {}).get("validation_files") or []
    if not names:
        raise LofiError(f"{model.path}: the model records no held-out validation files")
    return set(names) | {name.split(":", 1)[1] for name in names if ":" in name}


def tokenize_folder(
    folder: str | Path, engine: str = "auto", only: set[str] | None = None
) -> tuple[list[str], list[Path], list[str]]:
    """(token stream, files used, one line per file that failed); ``only``: relative paths to keep."""
    from lofi_live.midi_tokens import folder_files, midi_file_tokens

    stream: list[str] = []
    used: list[Path] = []
    failed: list[str] = []
    files = folder_files(folder)
    if only is not None:
        files = [file for file in files if Path(file).relative_to(folder).as_posix() in only]
    if not files:
        raise LofiError(f"{folder}: no {'held-out ' if only is not None else ''}.mid or .midi files found")
    for file in files:
        try:
            stream.extend(midi_file_tokens(file, engine))
            used.append(file)
        except LofiError as error:
            failed.append(str(error))
    return stream, used, failed


def baseline_predictions(model, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(unigram prediction, bigram predictions given each previous input) or None without baselines."""
    baselines = model.baselines
    if not baselines:
        return None
    size = len(model.vocabulary)
    counts = np.asarray(baselines.get("unigram_counts", []), dtype=np.float64)
    following = np.asarray(baselines.get("bigram_next", []), dtype=np.int64)
    if counts.shape != (size,) or following.shape != (size,) or following.min(initial=0) < -1 or following.max(initial=0) >= size:
        raise LofiError(f"{model.path}: baselines do not match the vocabulary size {size}")
    unigram = int(np.argmax(counts))  # ties go to the lower index
    bigram = np.where(following >= 0, following, unigram)
    return np.full(len(inputs), unigram), bigram[inputs]


def evaluate_stream(model, stream: list[str]) -> dict:
    """The metrics over a token stream (see the module notes)."""
    window = model.window
    if len(stream) <= window:
        raise LofiError(f"only {len(stream)} tokens: evaluation needs more than the window ({window})")
    mapping: dict[str, int] = {}
    inputs = np.empty(len(stream), np.int64)
    for i, token in enumerate(stream):
        if token not in mapping:
            encoded = model.encode([token])
            mapping[token] = encoded[0] if encoded else 0
        inputs[i] = mapping[token]
    targets = np.array([model.index.get(token, -1) for token in stream], np.int64)
    positions = np.arange(window, len(stream))
    windows = np.lib.stride_tricks.sliding_window_view(inputs, window)[: len(positions)]
    top1 = top5 = network_top1 = 0
    nll = 0.0
    for start in range(0, len(positions), BATCH):
        batch = windows[start : start + BATCH]
        network = model.window_probs(batch, cache=False)
        probs = np.stack([model.loop_cache.mix(row, window) for row, window in zip(network, batch)])
        truth = targets[positions[start : start + BATCH]]
        known = truth >= 0
        safe = np.where(known, truth, 0)
        network_top1 += int(np.sum(known & (np.argmax(network, axis=1) == safe)))
        p_true = np.where(known, probs[np.arange(len(truth)), safe], 0.0)
        top1 += int(np.sum(known & (np.argmax(probs, axis=1) == safe)))
        best5 = np.argpartition(-probs, min(5, probs.shape[1]) - 1, axis=1)[:, :5]
        top5 += int(np.sum(known & np.any(best5 == safe[:, None], axis=1)))
        nll += float(-np.log(np.maximum(p_true, EPSILON)).sum())
    n = len(positions)
    result = {"n": n, "top1": top1 / n, "top5": top5 / n, "nll": nll / n,
              "baseline_unigram_top1": None, "baseline_bigram_top1": None}
    if model.loop_cache.active:
        result["network_top1"] = network_top1 / n
    predictions = baseline_predictions(model, inputs[positions - 1])
    if predictions is not None:
        unigram, bigram = predictions
        truth = targets[positions]
        result["baseline_unigram_top1"] = float(np.mean(unigram == truth))
        result["baseline_bigram_top1"] = float(np.mean(bigram == truth))
    return result


def run(args: argparse.Namespace) -> int:
    from lofi_live.model import Model

    model = Model.load(args.model, provider=args.provider, window_threads=0)  # big batches: all cores
    only = held_out_names(model) if args.held_out else None
    stream, used, failed = tokenize_folder(args.data_dir, args.tokenizer, only)
    if not used:
        # nothing readable: one line naming the folder and the (first) file that failed, no skip notes
        count = f"{len(failed)} files failed, first" if len(failed) > 1 else "1 file failed"
        raise LofiError(f"{args.data_dir}: no readable MIDI file ({count}: {failed[0]})")
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    if len(stream) <= model.window:
        raise LofiError(f"{args.data_dir}: only {len(stream)} tokens in {len(used)} readable file(s); "
                        f"evaluation needs more than the window ({model.window})")
    result = evaluate_stream(model, stream)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    outside = sum(1 for token in stream[model.window :] if token not in model.index)
    table = Table(title=f"{model.name} on {args.data_dir}: {len(used)} files, {len(stream)} tokens, {result['n']} positions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1", f"{result['top1']:.3f}")
    if "network_top1" in result:
        table.add_row("top-1 of the network alone (no loop cache)", f"{result['network_top1']:.3f}")
    table.add_row("top-5", f"{result['top5']:.3f}")
    table.add_row("mean NLL (nats)", f"{result['nll']:.3f}")
    for key, label in (("baseline_unigram_top1", "unigram top-1"), ("baseline_bigram_top1", "bigram top-1")):
        value = result[key]
        table.add_row(label, "n/a (no baselines in the model)" if value is None else f"{value:.3f}")
    table.add_row("targets outside the vocabulary", f"{outside / result['n']:.3f}")
    Console().print(table)
    return 0
