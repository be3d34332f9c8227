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

* for grid models the copy baselines of :mod:`lofi_live.model.copy_baselines`, on the same positions:
  ``baseline_copy8_*``, ``baseline_copy16_*`` and ``baseline_copy_adaptive_*`` for ``top1``,
  ``rhythm_accuracy`` and ``onset_top1``; and ``onset_pc_jaccard``: at onset positions, the pitch-class
  Jaccard of the likeliest onset token against the true one (how near a wrong chord is).

``--loops`` (grid models) plays each file twice, as a producer plays a loop: its notes padded to whole 4/4
bars (:func:`lofi_live.tokens.loops.loop_steps`), then again; only
the second pass is scored, each position from the file's own tokens before it (at most ``window``), so the
first pass is what the network listens to. Without it, the files form one stream, as the seed does.

A model with a position input (``Model.uses_position``) reads beside each token its place in the 4/4 bar,
taken from the file's beat grid (:mod:`lofi_live.tokens.loops`). Input tokens outside the vocabulary are
mapped to the nearest known token (as the live engine does). The window graph runs in batches.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.model.copy_baselines import copy_baselines
from lofi_live.tokens.loops import TimedTokens, loop_steps, looped_tokens, timed_tokens
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
    parser.add_argument("--loops", action="store_true",
                        help="grid models: play each file twice (whole bars) and score only the second pass")
    parser.add_argument("--files", action="append", metavar="GLOB",
                        help="only the files whose name matches GLOB (repeatable), e.g. --files '*MLP*' for one creator")
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


def matching_names(folder: str | Path, patterns: Sequence[str]) -> set[str]:
    """The relative paths of the files below ``folder`` whose name matches one of the globs."""
    from lofi_live.tokens.midi import folder_files

    return {Path(file).relative_to(folder).as_posix() for file in folder_files(folder)
            if any(fnmatch.fnmatch(Path(file).name, pattern) for pattern in patterns)}


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
        raise LofiError(f"{folder}: no .mid or .midi files found{' among those selected (--held-out, --files)' if only is not None else ''}")
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


def timed_folder(folder: str | Path, only: set[str] | None = None, loops: bool = False
                 ) -> tuple[list[TimedTokens], list[Path], list[str]]:
    """Grid tokens with their steps of every file (played twice with ``loops``), the files used, the failures."""
    from lofi_live.tokens.grid import file_notes
    from lofi_live.tokens.midi import folder_files

    files = folder_files(folder)
    if only is not None:
        files = [file for file in files if Path(file).relative_to(folder).as_posix() in only]
    if not files:
        raise LofiError(f"{folder}: no .mid or .midi files found{' among those selected (--held-out, --files)' if only is not None else ''}")
    found: list[TimedTokens] = []
    used: list[Path] = []
    failed: list[str] = []
    for file in files:
        try:
            notes = file_notes(file)
            timed = looped_tokens(notes, loop_steps(notes)) if loops and notes else timed_tokens(notes)
        except LofiError as error:
            failed.append(str(error))
            continue
        if timed.tokens:
            found.append(timed)
            used.append(file)
    return found, used, failed


def loop_protocol(files: Sequence[TimedTokens]) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """(stream, bar positions, scored indices, each scored index's file start) of files played twice: the
    tokens of the second pass are scored, each read from its own file's tokens before it."""
    stream: list[str] = []
    positions: list[int] = []
    scored: list[int] = []
    floors: list[int] = []
    for timed in files:
        start, length = len(stream), timed.end_step // 2
        second = [start + i for i, step in enumerate(timed.steps) if step >= length]
        scored += second
        floors += [start] * len(second)
        stream += timed.tokens
        positions += timed.positions
    return stream, positions, np.array(scored, np.int64), np.array(floors, np.int64)


def _onset_pc_jaccard(probs: np.ndarray, truth_pcs: np.ndarray, classes: np.ndarray, pcs: np.ndarray,
                      true_class: np.ndarray) -> float:
    """Summed pitch-class Jaccard of the likeliest onset token against the true onset, at onset rows."""
    rows = true_class == 0
    if not np.any(rows):
        return 0.0
    best = np.argmax(np.where(classes[None, :] == 0, probs[rows], -1.0), axis=1)
    guess, truth = pcs[best], truth_pcs[rows]
    union = np.sum(guess | truth, axis=1)
    return float(np.sum(np.sum(guess & truth, axis=1) / np.maximum(union, 1)))


def _pitch_class_rows(tokens: Sequence[str]) -> np.ndarray:
    """``(len(tokens), 12)`` booleans: the pitch classes of each token (none for hold and rest)."""
    rows = np.zeros((len(tokens), 12), bool)
    for i, token in enumerate(tokens):
        if not token_rules.is_rhythm(token):
            rows[i, list(token_rules.token_pitch_classes(token))] = True
    return rows


def evaluate_stream(model, stream: list[str], positions: Sequence[int] | None = None,
                    scored: np.ndarray | None = None, floors: np.ndarray | None = None) -> dict:
    """The metrics over a token stream (see the module notes); ``network_*`` leave out the loop cache.

    ``positions``: each token's place in its bar, given to a model with a position input. ``scored``: the
    indices scored (default: every one with ``window`` tokens before it); ``floors``: where each scored
    index's context may start at the earliest (its file's first token under ``--loops``).
    """
    window = model.window
    if scored is None:
        if len(stream) <= window:
            raise LofiError(f"only {len(stream)} tokens: evaluation needs more than the window ({window})")
        scored = np.arange(window, len(stream))
    if floors is None:
        floors = np.zeros_like(scored)
    if len(scored) == 0:
        raise LofiError("no position to score")
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
    with_positions = getattr(model, "uses_position", False) and positions is not None
    bar = np.asarray(positions if positions is not None else np.zeros(len(stream)), np.int64)
    pcs = _pitch_class_rows(model.vocabulary) if grid else None
    truth_pcs = _pitch_class_rows(stream) if grid else None
    starts = np.maximum(scored - window, floors)
    lengths = scored - starts
    totals: dict[str, float] = {}
    for length in np.unique(lengths):
        rows = scored[lengths == length]
        for chunk in range(0, len(rows), BATCH):
            where = rows[chunk : chunk + BATCH]
            span = (where - length)[:, None] + np.arange(length)
            batch = inputs[span]
            extra = {"positions": bar[span]} if with_positions else {}
            network = model.window_probs(batch, cache=False, **extra)
            mixed = np.stack([model.loop_cache.mix(row, w) for row, w in zip(network, batch)])
            for prefix, probs in (("", mixed), ("network_", network)):
                found = _scores(probs, targets[where], classes, stream_class[where])
                if grid:
                    found["onset_pc_jaccard"] = _onset_pc_jaccard(probs, truth_pcs[where], classes, pcs,
                                                                  stream_class[where])
                for key, value in found.items():
                    totals[prefix + key] = totals.get(prefix + key, 0.0) + value
    n = len(scored)
    onsets = int(np.sum(stream_class[scored] == 0))
    result: dict = {"n": n, "tokens": model.tokens}
    for key, value in totals.items():
        base = key.removeprefix("network_")
        result[key] = value / max(onsets, 1) if base.startswith("onset_") else value / n
    if grid:
        result["n_onsets"] = onsets
        result.update(copy_baselines(inputs, targets, stream_class, scored, floors))
    result.update(baseline_scores(model, inputs, targets, scored, stream_class, starts))
    return result


def baseline_scores(model, inputs: np.ndarray, targets: np.ndarray, positions: np.ndarray,
                    stream_class: np.ndarray, starts: np.ndarray | None = None) -> dict:
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
    starts = positions - model.window if starts is None else starts
    onset_rows = stream_class[positions] == 0
    for position, start in zip(positions[onset_rows], starts[onset_rows]):
        scored += 1
        last = latest[position - 1]
        if last < start:
            prediction = common_onset  # no onset in the window
        else:
            prediction = onset_next[inputs[last]]
            prediction = prediction if prediction >= 0 else common_onset
        hits += int(prediction == targets[position]) if 0 <= prediction < size else 0
    result["baseline_onset_bigram_top1"] = hits / max(scored, 1)
    return result


def _read(args: argparse.Namespace, model, only: set[str] | None) -> tuple[list[str], dict, int, list[str]]:
    """(stream, evaluate_stream's extra arguments, files used, failures) under the protocol asked for."""
    if model.tokens != "grid":
        if args.loops:
            raise LofiError(f"--loops needs a grid model ({model.name} reads {model.tokens} tokens, without rests)")
        stream, used, failed = tokenize_folder(args.data_dir, args.tokenizer, only, model.tokens)
        return stream, {}, len(used), failed
    files, used, failed = timed_folder(args.data_dir, only, args.loops)
    if args.loops:
        stream, positions, scored, floors = loop_protocol(files)
        return stream, {"positions": positions, "scored": scored, "floors": floors}, len(used), failed
    stream = [token for timed in files for token in timed.tokens]
    return stream, {"positions": [p for timed in files for p in timed.positions]}, len(used), failed


def run(args: argparse.Namespace) -> int:
    from lofi_live.model.loader import Model

    model = Model.load(args.model, provider=args.provider, window_threads=0)  # big batches: all cores
    only = held_out_names(model) if args.held_out else None
    if args.files:
        matching = matching_names(args.data_dir, args.files)
        only = matching if only is None else only & matching
    stream, protocol, used, failed = _read(args, model, only)
    if not used:
        # nothing readable: one line naming the folder and the (first) file that failed, no skip notes
        if not failed:
            raise LofiError(f"{args.data_dir}: no notes outside the drum channel in any file")
        count = f"{len(failed)} files failed, first" if len(failed) > 1 else "1 file failed"
        raise LofiError(f"{args.data_dir}: no readable MIDI file ({count}: {failed[0]})")
    for line in failed:
        print(f"skipped {line}", file=sys.stderr)
    if not args.loops and len(stream) <= model.window:
        raise LofiError(f"{args.data_dir}: only {len(stream)} tokens in {used} readable file(s); "
                        f"evaluation needs more than the window ({model.window})")
    result = evaluate_stream(model, stream, **protocol)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    scored = protocol.get("scored", range(model.window, len(stream)))
    outside = sum(1 for i in scored if stream[i] not in model.index)
    how = ", each played twice, the second pass scored" if args.loops else ""
    table = Table(title=f"{model.name} on {args.data_dir}: {used} files{how}, {len(stream)} tokens, {result['n']} positions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("network alone (no loop cache)", justify="right")
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("nll", "mean NLL (nats)"),
                       ("rhythm_accuracy", "rhythm accuracy (onset / hold / rest)"),
                       ("onset_top1", "onset top-1"), ("onset_top5", "onset top-5"),
                       ("onset_pc_jaccard", "onset pitch-class Jaccard")):
        if key in result:
            table.add_row(label, f"{result[key]:.3f}", f"{result['network_' + key]:.3f}")
    baselines = [("baseline_unigram_top1", "unigram top-1"), ("baseline_bigram_top1", "bigram top-1"),
                 ("baseline_bigram_rhythm_accuracy", "bigram rhythm accuracy"),
                 ("baseline_onset_bigram_top1", "onset bigram top-1")]
    for name, label in (("copy8", "copy 8 back"), ("copy16", "copy 16 back"), ("copy_adaptive", "adaptive loop copy")):
        baselines += [(f"baseline_{name}_top1", f"{label} top-1"),
                      (f"baseline_{name}_rhythm_accuracy", f"{label} rhythm accuracy"),
                      (f"baseline_{name}_onset_top1", f"{label} onset top-1")]
    for key, label in baselines:
        if key in result:
            value = result[key]
            table.add_row(label, "n/a (no baselines in the model)" if value is None else f"{value:.3f}", "")
    table.add_row("targets outside the vocabulary", f"{outside / result['n']:.3f}", "")
    Console().print(table)
    return 0
