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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.model.format import encode_inputs
from training.fit import sequences
from training.corpus.io import corpus_tokens, load_corpus, read_index, read_shard

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
