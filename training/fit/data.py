"""The one data builder of ``fit``: corpora -> the run's data fields and the train and validation windows.

Two ways to hold the windows, one set of rules: corpus files in memory (:func:`build_data` builds
:class:`training.fit.sequences.WindowSet`) or shard folders streamed (:class:`training.fit.stream.StreamedWindows`).
Both give the same ``run.json`` fields from the same rules: the corpus labels that prefix file names, the
split by file, the vocabulary (unless given), the windows without a file, the export's seed windows
(:data:`SEED_WINDOWS` spread over the plain training windows) and n-gram baselines.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lofi_live.errors import LofiError
from training.corpus.io import corpus_tokens, load_corpus
from training.fit import sequences, variation
from training.fit.stream import BASELINE_TOKENS, StreamedWindows, entries, file_starts, sources

#: Training windows the export keeps as seeds (``seed_windows`` in run.json).
SEED_WINDOWS = 64


def corpus_labels(paths: Sequence[Path]) -> list[str]:
    """``corpora/pop909.json.gz`` -> ``pop909``, the prefix of file names when several corpora are given;
    the whole paths when two names are the same."""
    labels = [path.name.removesuffix(".gz").removesuffix(".json") for path in paths]
    return labels if len(set(labels)) == len(labels) else [str(path) for path in paths]


def _vocabulary(options: dict[str, Any], lists: Iterable[list[str]]) -> list[str]:
    """The vocabulary of the training data ``lists`` plus the ``--vocab-corpus`` corpora (transposed alike)."""
    extra = [f for p in options["vocab_corpora"] for f in sequences.corpus_files([load_corpus(p)], ["vocab"])]
    extra_lists = (f.tokens for f in sequences.augment(extra, options["transpose"]))
    return sequences.build_vocabulary(itertools.chain(lists, extra_lists), options["min_count"])


def _no_window(window: int) -> LofiError:
    return LofiError(f"no training file has more than {window} tokens: lower --window, add files "
                     "or repeat short files with --loop-short")


def _looped(files: list[sequences.TokenFile], options: dict[str, Any]) -> list[sequences.TokenFile]:
    """``--loop-short`` and ``--loop-times`` applied to training files."""
    if options.get("loop_short"):
        files = sequences.loop_short(files, options["window"])
    if int(options.get("loop_times") or 1) > 1:
        files = sequences.loop_files(files, int(options["loop_times"]))
    return files


def _fields(kind: str, vocabulary: list[str], paths: Sequence[Path], options: dict[str, Any],
            counts: dict[str, Any], plain: sequences.WindowSet, trained_on: list[sequences.TokenFile]) -> dict[str, Any]:
    """The run.json data fields; ``plain``: the training windows (before transposition) the seed windows are
    picked from; ``trained_on``: the training files as trained on, the baselines' data."""
    picks = np.linspace(0, len(plain) - 1, num=min(SEED_WINDOWS, len(plain))).round().astype(int)
    return {
        "tokens": kind,
        "vocabulary": vocabulary,
        "data": {
            "corpus": ", ".join(str(p) for p in paths),
            "corpora": [str(p.resolve()) for p in paths],
            **counts,
            "stride": int(options.get("stride") or 1),
            "transpose": options["transpose"],
            "oversample": options["oversample"],
            "loop_short": bool(options.get("loop_short")),
            "loop_times": int(options.get("loop_times") or 1),
            "vary_loops": int(options.get("vary_loops") or 0),
            "vary_rounds": int(options.get("vary_rounds") or 1),
            "vocab_corpora": [str(Path(p).resolve()) for p in options["vocab_corpora"]],
        },
        "seed_windows": plain.inputs(plain.starts[picks]).tolist() if len(plain) else [],
        # fitted on the training tokens as trained on (in all 12 keys with --transpose)
        "baselines": sequences.baselines(trained_on, vocabulary),
    }


def build_data(
    options: dict[str, Any], vocabulary: list[str] | None
) -> tuple[dict[str, Any], sequences.WindowSet, sequences.WindowSet]:
    """Corpus files in memory -> (run.json data fields, train windows, validation windows)."""
    paths = [Path(p) for p in options["corpora"]]
    corpora = [load_corpus(p) for p in paths]
    kinds = {corpus_tokens(c) for c in corpora}
    if len(kinds) > 1:
        raise LofiError(f"the corpora mix tokenizations ({', '.join(sorted(kinds))}): prepare them all with one --tokens")
    files = sequences.corpus_files(corpora, corpus_labels(paths))
    train, val = sequences.split_by_file(files, options["val_fraction"], options["val_files"], options["seed"])
    if options.get("loop_short"):
        val = sequences.loop_short(val, options["window"])
    train = _looped(train, options)
    train_aug = sequences.augment(train, options["transpose"])
    validation_names = [f.name for f in val]
    if options.get("vary_loops"):  # loops played 2..K times with variation, all files in one shuffled stream
        train_aug = variation.loop_stream(train_aug, int(options["vary_loops"]), int(options.get("vary_rounds") or 1),
                                          options["seed"])
        val = variation.validation_stream(val)
    if vocabulary is None:
        vocabulary = _vocabulary(options, (f.tokens for f in train_aug + val))
    window, stride = options["window"], int(options.get("stride") or 1)
    train_windows = sequences.make_windows(train_aug, vocabulary, window, stride)
    if not len(train_windows):
        raise _no_window(window)
    if options["oversample"]:
        train_windows = sequences.oversample(train_windows, options["oversample"])
    val_windows = sequences.make_windows(val, vocabulary, window)
    plain = sequences.make_windows(train, vocabulary, window)
    if not len(plain):  # loops shorter than the window (--vary-loops): the seed windows come from the stream
        plain = train_windows
    counts = {
        "files": len(files),
        "tokens": sum(len(f.tokens) for f in files),
        "train_files": len(train),
        "validation_files": validation_names,
        "train_windows": len(train_windows),
        "validation_windows": len(val_windows),
        # a file of at most `window` tokens gives no window (--loop-short repeats it until it does; under
        # --vary-loops the files are one stream, which gives windows)
        "train_files_without_window": 0 if options.get("vary_loops") else sum(len(f.tokens) <= window for f in train),
        "validation_files_without_window": sum(len(f.tokens) <= window for f in val),
    }
    return _fields(kinds.pop(), vocabulary, paths, options, counts, plain, train_aug), train_windows, val_windows


def build_stream_data(
    options: dict[str, Any], vocabulary: list[str] | None
) -> tuple[dict[str, Any], StreamedWindows, StreamedWindows]:
    """Shard folders streamed (:mod:`training.fit.stream`) -> the same fields and both window sets; the
    seed windows and baselines come from the first :data:`training.fit.stream.BASELINE_TOKENS` training tokens."""
    if options["oversample"] or options.get("vary_loops"):
        raise LofiError(f"{'--oversample' if options['oversample'] else '--vary-loops'} needs every window in memory: "
                        "merge the shards (lofi-train merge) to use it")
    paths = [Path(p) for p in options["corpora"]]
    streams, kind = sources(paths, corpus_labels(paths))
    window, stride = int(options["window"]), int(options.get("stride") or 1)
    names = [sequences.TokenFile(f.name, []) for s in streams for f in entries(s)]
    if not names:
        raise LofiError(f"{', '.join(map(str, paths))}: the corpora hold no tokenized files")
    train_names, val_names = sequences.split_by_file(names, options["val_fraction"], options["val_files"],
                                                     options["seed"])
    held_out = frozenset(f.name for f in val_names)
    train = StreamedWindows(streams, held_out, False, options, vocabulary or [], 0)
    val = StreamedWindows(streams, held_out, True, options, vocabulary or [], 0)
    if vocabulary is None:
        vocabulary = _vocabulary(options, (f.tokens for side in (train, val) for s in streams for f in side.files(s)))
        train.vocabulary = val.vocabulary = vocabulary
    tokens = without_train = without_val = 0
    sample: list[sequences.TokenFile] = []
    sample_tokens = 0
    for source in streams:
        for file in entries(source):
            tokens += len(file.tokens)
            if file.name not in held_out and sample_tokens < BASELINE_TOKENS:
                sample.append(file)
                sample_tokens += len(file.tokens)
        without_val += sum(len(f.tokens) <= window for f in val.files(source))
        without_train += sum(len(f.tokens) <= window for f in train.files(source, augmented=False))
        train.count += sum(len(file_starts(len(f.tokens), window, stride)) for f in train.files(source))
        val.count += sum(len(file_starts(len(f.tokens), window, 1)) for f in val.files(source))
    if not train.count:
        raise _no_window(window)
    counts = {
        "streamed": True,
        "files": len(names),
        "tokens": tokens,
        "train_files": len(train_names),
        "validation_files": [f.name for f in val_names],
        "train_windows": train.count,
        "validation_windows": val.count,
        "train_files_without_window": without_train,
        "validation_files_without_window": without_val,
        "baseline_files": len(sample),
    }
    sample = _looped(sample, options)
    plain = sequences.make_windows(sample, vocabulary, window)
    return _fields(kind, vocabulary, paths, options, counts, plain, sequences.augment(sample, options["transpose"])), train, val
