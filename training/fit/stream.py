"""Training input streamed from shard folders: ``fit`` on a corpus larger than memory.

When a corpus given to ``fit`` is a shard folder (``prepare --shard-files``), no token list is held whole:

1. a first pass reads only each file's name, so the validation split is exactly
   :func:`training.fit.sequences.split_by_file`'s (hash of the name or ``--val-files``), on names alone;
2. a second pass counts the vocabulary (unless ``--vocab-from`` / ``--init-from`` give it), a third counts
   the windows and keeps the first :data:`BASELINE_TOKENS` training tokens for the export's n-gram
   baselines and seed windows;
3. training reads the shards through ``tf.data``: the shard order is shuffled every epoch, :data:`CYCLE`
   shards are interleaved, each file's windows are made on the fly (loop, transposition and stride applied
   per file, as in memory) and a buffer of :data:`SHUFFLE_WINDOWS` windows shuffles them.

So memory holds one shard per interleaved stream, the shuffle buffer and the names of the files, whatever the
corpus size. Compared with the in-memory path, windows are shuffled within the buffer instead of over the
whole set, and ``--oversample`` (which needs every window's target at once) is refused. A corpus file given
beside shard folders is read as one more stream.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.model.format import encode_inputs
from training.fit import sequences
from training.corpus.cluster import read_index, read_shard
from training.corpus.prepare import corpus_tokens, load_corpus

#: Windows in the shuffle buffer (32-token windows: about 1.3 MB of int32 inputs).
SHUFFLE_WINDOWS = 10_000
#: Shards read at once, their windows interleaved.
CYCLE = 4
#: Training tokens (before transposition) the export's baselines and seed windows are fitted on.
BASELINE_TOKENS = 2_000_000


@dataclass(frozen=True)
class Source:
    """One stream of file entries: a shard, or a whole corpus file; ``label`` prefixes names of several corpora."""

    path: Path
    shard: bool
    label: str | None


def sources(paths: Sequence[Path], labels: Sequence[str]) -> tuple[list[Source], str]:
    """The streams of the given corpora and their one tokenization (a mix is refused as in memory)."""
    found: list[Source] = []
    kinds: set[str] = set()
    for path, label in zip(paths, labels):
        prefix = label if len(paths) > 1 else None
        if path.is_dir():
            index = read_index(path)
            kinds.add(corpus_tokens(index))
            found += [Source(path / shard["name"], True, prefix) for shard in index["shards"]]
        else:
            kinds.add(corpus_tokens(load_corpus(path)))
            found.append(Source(path, False, prefix))
    if len(kinds) > 1:
        raise LofiError(f"the corpora mix tokenizations ({', '.join(sorted(kinds))}): prepare them all with one --tokens")
    return found, kinds.pop()


def entries(source: Source) -> Iterator[sequences.TokenFile]:
    """The files of one stream, named as :func:`training.fit.sequences.corpus_files` names them."""
    listed = read_shard(source.path) if source.shard else iter(load_corpus(source.path)["files"])
    for entry in listed:
        name = entry["path"] if source.label is None else f"{source.label}:{entry['path']}"
        yield sequences.TokenFile(name, list(entry["tokens"]))


def file_starts(length: int, window: int, stride: int) -> np.ndarray:
    """The window starts :func:`training.fit.sequences.make_windows` cuts from one file of ``length`` tokens."""
    if length <= window:
        return np.zeros(0, np.int64)
    starts = np.arange(0, length - window, stride, dtype=np.int64)
    return starts if starts[-1] == length - window - 1 else np.append(starts, length - window - 1)


class StreamedWindows:
    """The training or validation windows of streamed corpora: a count, and a ``tf.data`` pipeline of them."""

    def __init__(self, streams: list[Source], held_out: frozenset[str], validation: bool, options: dict[str, Any],
                 vocabulary: list[str], count: int) -> None:
        self.streams, self.held_out, self.validation = streams, held_out, validation
        self.options, self.vocabulary, self.count = options, vocabulary, count
        self.window = int(options["window"])

    def __len__(self) -> int:
        return self.count

    def files(self, source: Source, augmented: bool = True) -> Iterator[sequences.TokenFile]:
        """This side's files of one stream, looped and (unless not ``augmented``) transposed as in memory."""
        for file in entries(source):
            if (file.name in self.held_out) != self.validation:
                continue
            chosen = [file]
            if self.options.get("loop_short"):
                chosen = sequences.loop_short(chosen, self.window)
            if not self.validation:
                if int(self.options.get("loop_times") or 1) > 1:
                    chosen = sequences.loop_files(chosen, int(self.options["loop_times"]))
                chosen = sequences.augment(chosen, self.options["transpose"] and augmented)
            yield from chosen

    def dataset(self, encoding: str, batch_size: int, shuffle: bool, seed: int, sequence: bool) -> Any:
        """Batches of (encoded inputs, targets), interleaved over the streams and shuffled in a buffer."""
        import tensorflow as tf

        stride = 1 if self.validation else int(self.options.get("stride") or 1)
        encode = sequences.encoder(self.vocabulary)
        vocab = len(self.vocabulary)
        offsets = np.arange(self.window)

        def windows(number: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for file in self.files(self.streams[int(number)]):
                ids = encode(file.tokens)
                starts = file_starts(len(ids), self.window, stride)
                if not len(starts):
                    continue
                inputs = encode_inputs(ids[starts[:, None] + offsets[None, :]], encoding, vocab)
                targets = ids[starts[:, None] + 1 + offsets[None, :]] if sequence else ids[starts + self.window]
                yield inputs, targets.astype(np.int32)

        shape = (None, self.window) + ((1,) if encoding == "scaled" else ())
        signature = (tf.TensorSpec(shape, tf.float32 if encoding == "scaled" else tf.int32),
                     tf.TensorSpec((None, self.window) if sequence else (None,), tf.int32))
        order = tf.data.Dataset.range(len(self.streams))
        if shuffle:
            order = order.shuffle(len(self.streams), seed=seed, reshuffle_each_iteration=True)
        data = order.interleave(
            lambda number: tf.data.Dataset.from_generator(windows, output_signature=signature, args=(number,)),
            cycle_length=min(CYCLE, len(self.streams)), block_length=1,
        ).unbatch()
        if shuffle:
            data = data.shuffle(SHUFFLE_WINDOWS, seed=seed, reshuffle_each_iteration=True)
        # the count is known from the counting pass: Keras then sizes its progress bar and epochs, and
        # tf.data checks that the stream gave exactly that many batches
        batches = tf.data.experimental.assert_cardinality(-(-self.count // batch_size))
        return data.batch(batch_size).apply(batches).prefetch(2)


def build_stream_data(
    options: dict[str, Any], vocabulary: list[str] | None
) -> tuple[dict[str, Any], StreamedWindows, StreamedWindows]:
    """The streamed counterpart of :func:`training.fit.loop.build_data`: run.json fields and both window sets."""
    if options["oversample"]:
        raise LofiError("--oversample needs every window in memory: merge the shards (lofi-train merge) to use it")
    if options.get("vary_loops"):
        raise LofiError("--vary-loops shuffles every file into one stream in memory: merge the shards "
                        "(lofi-train merge) to use it")
    from training.fit.loop import SEED_WINDOWS, _corpus_label

    paths = [Path(p) for p in options["corpora"]]
    labels = [_corpus_label(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    streams, kind = sources(paths, labels)
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
        extra = [f for p in options["vocab_corpora"] for f in sequences.corpus_files([load_corpus(p)], ["vocab"])]
        lists = (f.tokens for side in (train, val) for s in streams for f in side.files(s))
        extra_lists = (f.tokens for f in sequences.augment(extra, options["transpose"]))
        vocabulary = sequences.build_vocabulary(itertools.chain(lists, extra_lists), options["min_count"])
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
        raise LofiError(f"no training file has more than {window} tokens: lower --window, add files "
                        "or repeat short files with --loop-short")
    if options.get("loop_short"):
        sample = sequences.loop_short(sample, window)
    if int(options.get("loop_times") or 1) > 1:
        sample = sequences.loop_files(sample, int(options["loop_times"]))
    plain = sequences.make_windows(sample, vocabulary, window)
    picks = np.linspace(0, len(plain) - 1, num=min(SEED_WINDOWS, len(plain))).round().astype(int)
    fields = {
        "tokens": kind,
        "vocabulary": vocabulary,
        "data": {
            "corpus": ", ".join(str(p) for p in paths),
            "corpora": [str(p.resolve()) for p in paths],
            "streamed": True,
            "files": len(names),
            "tokens": tokens,
            "train_files": len(train_names),
            "validation_files": [f.name for f in val_names],
            "train_windows": train.count,
            "stride": stride,
            "validation_windows": val.count,
            "transpose": options["transpose"],
            "oversample": options["oversample"],
            "loop_short": bool(options.get("loop_short")),
            "loop_times": int(options.get("loop_times") or 1),
            "vary_loops": int(options.get("vary_loops") or 0),
            "vary_rounds": int(options.get("vary_rounds") or 1),
            "vocab_corpora": [str(Path(p).resolve()) for p in options["vocab_corpora"]],
            "train_files_without_window": without_train,
            "validation_files_without_window": without_val,
            "baseline_files": len(sample),
        },
        "seed_windows": plain.inputs(plain.starts[picks]).tolist() if len(plain) else [],
        "baselines": sequences.baselines(sequences.augment(sample, options["transpose"]), vocabulary),
    }
    return fields, train, val
