"""``lofi-live evaluate``: next-token accuracy of a model on a folder of MIDI files, against baselines.

The files are tokenized with the model's own rules (``grid``: :mod:`lofi_live.tokens.grid`; ``seed``:
:mod:`lofi_live.tokens.midi`, music21 when installed, else the mido path) and concatenated in sorted
file-name order into one stream, as the seed does. Every position with ``window`` tokens before it is
scored:

* ``top1`` / ``top5``: the true next token is the model's first / among its five likeliest;
* ``nll``: mean ``-log p(true token)``; a true token outside the model's vocabulary is a miss for every
  metric and counts ``-log(EPSILON)`` (about 27.6 nats), as does any probability below ``EPSILON``;
* grid models also: ``rhythm_accuracy`` (the class, onset / hold / rest, with the largest summed
  probability is the true one) and, at the ``n_onsets`` positions whose true token is an onset,
  ``onset_top1`` / ``onset_top5`` (the likeliest onset tokens, holds and rests set aside);
* every figure also as ``network_*``: the network alone, without the model's loop cache
  (lofi_live/model/loop_cache.py), so a cache can never hide a weak network;
* baselines fitted on the model's training tokens (``baselines`` in its JSON, in all 12 keys when it was
  trained transposed): ``baseline_unigram_top1`` (always the most frequent token),
  ``baseline_bigram_top1`` (the most frequent successor of the previous token), and for grid models
  ``baseline_bigram_rhythm_accuracy`` (the likeliest class after the previous token) and
  ``baseline_onset_bigram_top1`` (the last onset token in the window -> the most frequent next onset
  token, holds and rests skipped).

Input tokens outside the vocabulary are mapped to the nearest known token (as the live engine does).
The window graph runs in batches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.tokens.rules import RHYTHM_CLASSES

#: Probability floor for the NLL (a target outside the vocabulary scores -log(EPSILON) = 27.63 nats).
EPSILON = 1e-12
BATCH = 512


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder of .mid/.midi files (searched recursively)")
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--tokenizer", choices=("auto", "music21", "mido"), default="auto", help="auto = music21 when installed (default)")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS, help="ONNX Runtime provider (default auto)")
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
    folder: str | Path, engine: str = "auto", only: set[str] | None = None, kind: str = "seed"
) -> tuple[list[str], list[Path], list[str]]:
    """(token stream, files used, one line per file that failed); ``only``: relative paths to keep.

    ``kind`` is the model's tokenization: ``grid`` reads every file with :mod:`lofi_live.tokens.grid`,
    ``seed`` with ``engine`` (music21 when installed under ``auto``).
    """
    from lofi_live.tokens.grid import file_tokens
    from lofi_live.tokens.midi import folder_files, midi_file_tokens

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
            stream.extend(file_tokens(file) if kind == "grid" else midi_file_tokens(file, engine))
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


def _class_of(vocabulary) -> np.ndarray:
    """Each vocabulary token's rhythm class, as an index into RHYTHM_CLASSES (onset, hold, rest)."""
    return np.array([RHYTHM_CLASSES.index(token_rules.rhythm_class(t)) for t in vocabulary])


def _scores(probs: np.ndarray, truth: np.ndarray, classes: np.ndarray, true_class: np.ndarray) -> dict[str, float]:
    """Summed hits of one batch: top1, top5, nll, and for grid models rhythm and onset hits."""
    known = truth >= 0
    safe = np.where(known, truth, 0)
    rows = np.arange(len(truth))
    best5 = np.argpartition(-probs, min(5, probs.shape[1]) - 1, axis=1)[:, :5]
    found = {
        "top1": float(np.sum(known & (np.argmax(probs, axis=1) == safe))),
        "top5": float(np.sum(known & np.any(best5 == safe[:, None], axis=1))),
        "nll": float(-np.log(np.maximum(np.where(known, probs[rows, safe], 0.0), EPSILON)).sum()),
    }
    if classes is not None:
        summed = np.stack([probs[:, classes == c].sum(axis=1) for c in range(len(RHYTHM_CLASSES))], axis=1)
        found["rhythm_accuracy"] = float(np.sum(np.argmax(summed, axis=1) == true_class))
        onset_rows = true_class == 0
        onsets = np.where(classes[None, :] == 0, probs, -1.0)[onset_rows]
        target = safe[onset_rows]
        hit = known[onset_rows]
        best5 = np.argpartition(-onsets, min(5, onsets.shape[1]) - 1, axis=1)[:, :5]
        found["onset_top1"] = float(np.sum(hit & (np.argmax(onsets, axis=1) == target)))
        found["onset_top5"] = float(np.sum(hit & np.any(best5 == target[:, None], axis=1)))
    return found


def evaluate_stream(model, stream: list[str]) -> dict:
    """The metrics over a token stream (see the module notes); ``network_*`` leave out the loop cache."""
    window = model.window
    if len(stream) <= window:
        raise LofiError(f"only {len(stream)} tokens: evaluation needs more than the window ({window})")
    mapping: dict[str, int] = {}
    inputs = np.empty(len(stream), np.int64)
    for i, token in enumerate(stream):
        if token not in mapping:
            mapping[token] = model.encode([token])[0]
        inputs[i] = mapping[token]
    targets = np.array([model.index.get(token, -1) for token in stream], np.int64)
    grid = model.tokens == "grid"
    classes = _class_of(model.vocabulary) if grid else None
    stream_class = np.array([RHYTHM_CLASSES.index(token_rules.rhythm_class(t)) for t in stream])
    positions = np.arange(window, len(stream))
    windows = np.lib.stride_tricks.sliding_window_view(inputs, window)[: len(positions)]
    totals: dict[str, float] = {}
    for start in range(0, len(positions), BATCH):
        batch = windows[start : start + BATCH]
        network = model.window_probs(batch, cache=False)
        mixed = np.stack([model.loop_cache.mix(row, w) for row, w in zip(network, batch)])
        where = positions[start : start + BATCH]
        for prefix, probs in (("", mixed), ("network_", network)):
            for key, value in _scores(probs, targets[where], classes, stream_class[where]).items():
                totals[prefix + key] = totals.get(prefix + key, 0.0) + value
    n = len(positions)
    onsets = int(np.sum(stream_class[positions] == 0))
    result: dict = {"n": n, "tokens": model.tokens}
    for key, value in totals.items():
        base = key.removeprefix("network_")
        result[key] = value / max(onsets, 1) if base.startswith("onset_") else value / n
    if grid:
        result["n_onsets"] = onsets
    result.update(baseline_scores(model, inputs, targets, positions, stream_class))
    return result


def baseline_scores(model, inputs: np.ndarray, targets: np.ndarray, positions: np.ndarray,
                    stream_class: np.ndarray) -> dict:
    """The n-gram baselines' figures on the same positions (None where the model records no baselines).

    The bigram predicts from the previous token; the onset bigram from the last onset token of the
    window (holds and rests skipped), scored at the positions whose true token is an onset.
    """
    result: dict = {"baseline_unigram_top1": None, "baseline_bigram_top1": None}
    predictions = baseline_predictions(model, inputs[positions - 1])
    if predictions is None:
        return result
    unigram, bigram = predictions
    truth = targets[positions]
    result["baseline_unigram_top1"] = float(np.mean(unigram == truth))
    result["baseline_bigram_top1"] = float(np.mean(bigram == truth))
    baselines = model.baselines
    if model.tokens != "grid" or "onset_bigram_next" not in baselines:
        return result
    classes = _class_of(model.vocabulary)
    size = len(model.vocabulary)
    rhythm_next = np.asarray(baselines["bigram_rhythm_next"], dtype=np.int64)
    counts = np.asarray(baselines["unigram_counts"], dtype=np.float64)
    common_class = int(np.argmax([counts[classes == c].sum() for c in range(len(RHYTHM_CLASSES))]))
    guess = rhythm_next[inputs[positions - 1]]
    guess = np.where(guess >= 0, guess, common_class)
    result["baseline_bigram_rhythm_accuracy"] = float(np.mean(guess == stream_class[positions]))
    onset_next = np.asarray(baselines["onset_bigram_next"], dtype=np.int64)
    onset_counts = np.where(classes == 0, counts, -1.0)
    common_onset = int(np.argmax(onset_counts))
    pitched = classes[inputs] == 0
    # the last onset at or before each position - 1: index of the latest pitched input so far
    latest = np.maximum.accumulate(np.where(pitched, np.arange(len(inputs)), -1))
    hits = scored = 0
    window = model.window
    for position in positions[stream_class[positions] == 0]:
        scored += 1
        last = latest[position - 1]
        if last < position - window:
            prediction = common_onset  # no onset in the window
        else:
            prediction = onset_next[inputs[last]]
            prediction = prediction if prediction >= 0 else common_onset
        hits += int(prediction == targets[position]) if 0 <= prediction < size else 0
    result["baseline_onset_bigram_top1"] = hits / max(scored, 1)
    return result


def run(args: argparse.Namespace) -> int:
    from lofi_live.model.loader import Model

    model = Model.load(args.model, provider=args.provider, window_threads=0)  # big batches: all cores
    only = held_out_names(model) if args.held_out else None
    stream, used, failed = tokenize_folder(args.data_dir, args.tokenizer, only, model.tokens)
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
    table.add_column("network alone (no loop cache)", justify="right")
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("nll", "mean NLL (nats)"),
                       ("rhythm_accuracy", "rhythm accuracy (onset / hold / rest)"),
                       ("onset_top1", "onset top-1"), ("onset_top5", "onset top-5")):
        if key in result:
            table.add_row(label, f"{result[key]:.3f}", f"{result['network_' + key]:.3f}")
    for key, label in (("baseline_unigram_top1", "unigram top-1"), ("baseline_bigram_top1", "bigram top-1"),
                       ("baseline_bigram_rhythm_accuracy", "bigram rhythm accuracy"),
                       ("baseline_onset_bigram_top1", "onset bigram top-1")):
        if key in result:
            value = result[key]
            table.add_row(label, "n/a (no baselines in the model)" if value is None else f"{value:.3f}", "")
    table.add_row("targets outside the vocabulary", f"{outside / result['n']:.3f}", "")
    Console().print(table)
    return 0
