"""Corpus tokens -> training windows: vocabulary, split by file, transposition, oversampling.

Everything here works per file, so a window never straddles two files, and the validation set
holds whole files the model never trained on (windows of one song overlap heavily, so a split by
window would leak). Windows are kept as start offsets into one flat index array, so even a
1.7-million-token corpus transposed into 12 keys fits in memory.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.model.format import encode_tokens
from lofi_live.tokens.grid import STEPS_PER_BAR, bar_positions
from lofi_live.tokens.rules import (
    REST,
    RHYTHM_CLASSES,
    is_chord,
    is_rhythm,
    note_to_midi,
    rhythm_class,
    transpose_token,
)

#: ``--transpose`` shifts: every key, moving each file at most a tritone down or a fifth up.
TRANSPOSE_SHIFTS = tuple(range(-5, 7))


@dataclass(frozen=True)
class TokenFile:
    """The tokens of one MIDI file; ``name`` is unique over all corpora given.

    ``positions``: each token's position in its 4/4 bar (0-7), from the file's beat grid; None for a corpus
    prepared before positions were recorded (then the token count from the file's start stands in).
    """

    name: str
    tokens: list[str]
    positions: list[int] | None = None


def positions_of(file: TokenFile) -> list[int]:
    """A file's bar positions: recorded ones, else its step count from a downbeat (:func:`bar_positions`)."""
    return list(file.positions) if file.positions is not None else bar_positions(len(file.tokens))


@dataclass
class WindowSet:
    """Windows as start offsets into ``ids``: input ``ids[s:s+window]``, target ``ids[s+window]``."""

    ids: np.ndarray
    starts: np.ndarray
    window: int
    files: list[str] = field(default_factory=list)
    #: each token's bar position (0-7), parallel to ``ids``
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.starts))

    def inputs(self, starts: np.ndarray | None = None) -> np.ndarray:
        """The input windows ``[N, window]`` (int32) of the given starts (default: all)."""
        chosen = self.starts if starts is None else starts
        return self.ids[chosen[:, None] + np.arange(self.window)[None, :]]

    def targets(self, starts: np.ndarray | None = None) -> np.ndarray:
        chosen = self.starts if starts is None else starts
        return self.ids[chosen + self.window]

    def input_positions(self, starts: np.ndarray | None = None) -> np.ndarray:
        """The bar positions ``[N, window]`` (int32) of the given windows' inputs (default: all)."""
        chosen = self.starts if starts is None else starts
        assert self.positions is not None
        return self.positions[chosen[:, None] + np.arange(self.window)[None, :]]

    def sequence_targets(self, starts: np.ndarray | None = None) -> np.ndarray:
        """The next token at every position ``[N, window]``: ``ids[s+1 : s+window+1]`` (sequence presets)."""
        chosen = self.starts if starts is None else starts
        return self.ids[chosen[:, None] + 1 + np.arange(self.window)[None, :]]


def corpus_files(corpora: Sequence[dict], labels: Sequence[str]) -> list[TokenFile]:
    """The files of several corpora; names are prefixed with the corpus label when there are several."""
    files: list[TokenFile] = []
    for corpus, label in zip(corpora, labels):
        for entry in corpus["files"]:
            name = entry["path"] if len(corpora) == 1 else f"{label}:{entry['path']}"
            positions = entry.get("positions")
            files.append(TokenFile(name, list(entry["tokens"]), None if positions is None else list(positions)))
    return files


def split_by_file(
    files: Sequence[TokenFile], val_fraction: float = 0.1, val_glob: str | Sequence[str] | None = None, seed: int = 0
) -> tuple[list[TokenFile], list[TokenFile]]:
    """Split whole files into (train, validation).

    With ``val_glob`` (one glob or several) the files whose name matches one are validation. Otherwise a file is validation
    when the SHA-256 of ``"{seed}:{name}"`` falls below ``val_fraction``: stable when files are added
    or removed, and the same on every machine. With a positive fraction and at least two files, at
    least one file is held out and at least one is kept for training.
    """
    if val_glob:
        globs = [val_glob] if isinstance(val_glob, str) else list(val_glob)
        val = [f for f in files if any(fnmatch.fnmatchcase(f.name, glob) for glob in globs)]
        if not val:
            raise LofiError(f"--val-files {' '.join(globs)} matches none of the {len(files)} corpus files")
    elif val_fraction <= 0 or len(files) < 2:
        val = []
    else:
        scored = sorted(files, key=lambda f: _unit_hash(f"{seed}:{f.name}"))
        val = [f for f in scored if _unit_hash(f"{seed}:{f.name}") < val_fraction] or scored[:1]
        val = val[: len(files) - 1]
    held = {f.name for f in val}
    train = [f for f in files if f.name not in held]
    if not train:
        raise LofiError("the validation split leaves no file for training")
    return train, [f for f in files if f.name in held]


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def transpose_file(tokens: Sequence[str], semitones: int) -> list[str] | None:
    """A file moved by ``semitones``, or None when one of its notes would leave the MIDI range.

    The whole shifted copy is dropped rather than the note, so no copy has holes in its melody. A
    note landing on MIDI 3, 4, 10 or 11 also drops the copy: music21's names for those pitches
    read back as other notes (see :func:`lofi_live.tokens.rules.note_to_midi`).
    """
    moved: list[str] = []
    for token in tokens:
        shifted = _shift(token, semitones)
        if shifted is None:
            return None
        moved.append(shifted)
    return moved


@lru_cache(maxsize=65536)
def _shift(token: str, semitones: int) -> str | None:
    """One token moved, or None when it leaves the range or lands on a name that does not read back."""
    shifted = transpose_token(token, semitones)
    if is_rhythm(token):
        return shifted
    if shifted is None or (not is_chord(token) and note_to_midi(shifted) != note_to_midi(token) + semitones):
        return None
    return shifted


def augment(files: Sequence[TokenFile], transpose: bool) -> list[TokenFile]:
    """With ``transpose``, each file in all 12 keys (-5..+6 semitones; shift 0 first), else as is."""
    if not transpose:
        return list(files)
    copies: list[TokenFile] = []
    for file in files:
        for shift in sorted(TRANSPOSE_SHIFTS, key=abs):
            moved = list(file.tokens) if shift == 0 else transpose_file(file.tokens, shift)
            if moved is not None:
                copies.append(TokenFile(file.name if shift == 0 else f"{file.name}@{shift:+d}", moved, file.positions))
    return copies


def loop_short(files: Sequence[TokenFile], window: int) -> list[TokenFile]:
    """Repeat each file shorter than ``window + 1`` tokens whole until it is long enough for a window.

    Most LoFi loops are 1-8 bars, shorter than a 32-token window, so without this they give no
    window at all; a loop played again is what a loop is for. Longer files are left as they are.
    """
    looped: list[TokenFile] = []
    for file in files:
        count = len(file.tokens)
        if 0 < count <= window:
            times = -(-(window + 1) // count)
            file = TokenFile(file.name, list(file.tokens) * times, positions_of(file) * times)
        looped.append(file)
    return looped


def loop_files(files: Sequence[TokenFile], times: int, bar_steps: int = 8) -> list[TokenFile]:
    """Every file played ``times`` in a row, each pass padded with rests to a whole bar.

    For loop corpora (LoFi loops are 1-8 bars played again and again): the grid drops a loop's
    trailing rests, so the padding puts each repeat back on its bar line. A network that sees the
    second pass learns to carry on the loop from its context, not only the loops it was shown.
    Seed-token files (no rests) are repeated without padding.
    """
    looped: list[TokenFile] = []
    for file in files:
        tokens = list(file.tokens)
        positions = positions_of(file)
        if any(is_rhythm(t) for t in tokens) and tokens:
            pad = (positions[0] - positions[-1] - 1) % bar_steps  # the next pass starts where this one began
            tokens += [REST] * pad
            positions += bar_positions(pad, positions[-1] + 1)
        keep = len(tokens) * (times - 1) + len(file.tokens)
        looped.append(TokenFile(file.name, (tokens * times)[:keep], (positions * times)[:keep]))
    return looped


def build_vocabulary(token_lists: Iterable[Sequence[str]], min_count: int = 1) -> list[str]:
    """Sorted distinct tokens seen at least ``min_count`` times (all of them by default)."""
    counts = Counter(token for tokens in token_lists for token in tokens)
    vocabulary = sorted(token for token, count in counts.items() if count >= min_count)
    if not vocabulary:
        raise LofiError(f"no token occurs {min_count} times or more: lower --min-count")
    return vocabulary


def encoder(vocabulary: Sequence[str]) -> Callable[[Sequence[str]], np.ndarray]:
    """A function token strings -> indices under the runtime's rule
    (:func:`lofi_live.model.format.encode_tokens`: an unknown token becomes its nearest vocabulary token,
    a malformed one is an error), resolving each unknown token once however many files it is called on."""
    index: dict[str, int] = {token: position for position, token in enumerate(vocabulary)}
    resolved: dict[str, int] = {}
    return lambda tokens: encode_tokens(tokens, vocabulary, index, resolved)


def make_windows(files: Sequence[TokenFile], vocabulary: Sequence[str], window: int, stride: int = 1) -> WindowSet:
    """Every ``stride``-th window of every file, never across files; a file shorter than ``window + 1`` gives none.

    With a stride above 1 each file also gives its last window, so its final tokens are targets too.
    """
    if stride < 1:
        raise LofiError(f"--stride must be at least 1, not {stride}")
    encode = encoder(vocabulary)
    chunks: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    offset = 0
    for file in files:
        ids = encode(file.tokens)
        steps.append(np.asarray(positions_of(file), np.int32) % STEPS_PER_BAR)
        if len(ids) > window:
            local = np.arange(0, len(ids) - window, stride, dtype=np.int64)
            if local[-1] != len(ids) - window - 1:
                local = np.append(local, len(ids) - window - 1)
            starts.append(offset + local)
        chunks.append(ids)
        offset += len(ids)
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    flat_positions = np.concatenate(steps) if steps else np.zeros(0, np.int32)
    start_array = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    return WindowSet(flat, start_array, window, [f.name for f in files], flat_positions)


def oversample(windows: WindowSet, max_class: int) -> WindowSet:
    """Repeat the windows of rare targets until each target class has at least ``max_class`` windows.

    The seed's idea: a class (next token) with ``n < max_class`` windows gets its windows repeated in
    order (cycling) until it has exactly ``max_class``; classes with ``max_class`` or more are left
    as they are. So no class is shrunk and no class grows beyond the cap.
    """
    if max_class < 1:
        raise LofiError(f"--oversample must be at least 1, not {max_class}")
    targets = windows.targets()
    extra: list[np.ndarray] = []
    for target in np.unique(targets):
        members = windows.starts[targets == target]
        missing = max_class - len(members)
        if missing > 0:
            extra.append(members[np.arange(missing) % len(members)])
    starts = np.concatenate([windows.starts, *extra]) if extra else windows.starts
    return WindowSet(windows.ids, starts, windows.window, windows.files, windows.positions)


def unigram_counts(files: Sequence[TokenFile], vocabulary: Sequence[str]) -> list[int]:
    """How often each vocabulary token occurs in the files (unknown tokens counted as their nearest)."""
    encode = encoder(vocabulary)
    counts = np.zeros(len(vocabulary), dtype=np.int64)
    for file in files:
        np.add.at(counts, encode(file.tokens), 1)
    return [int(c) for c in counts]


def _most_frequent_next(counts: np.ndarray) -> list[int]:
    """Row-wise argmax of successor counts (ties to the lower index), -1 for a row never followed."""
    best = counts.argmax(axis=1)
    return [int(b) if counts[i, b] > 0 else -1 for i, b in enumerate(best)]


def bigram_next(files: Sequence[TokenFile], vocabulary: Sequence[str]) -> list[int]:
    """For each token, the most frequent next token within a file (ties to the lower index), else -1."""
    encode = encoder(vocabulary)
    size = len(vocabulary)
    counts = np.zeros((size, size), dtype=np.int64)
    for file in files:
        ids = encode(file.tokens)
        np.add.at(counts, (ids[:-1], ids[1:]), 1)
    return _most_frequent_next(counts)


def onset_bigram_next(files: Sequence[TokenFile], vocabulary: Sequence[str]) -> list[int]:
    """For each onset token, the most frequent next onset token within a file, holds and rests skipped."""
    encode = encoder(vocabulary)
    size = len(vocabulary)
    pitched = np.array([not is_rhythm(t) for t in vocabulary])
    counts = np.zeros((size, size), dtype=np.int64)
    for file in files:
        ids = encode(file.tokens)
        onsets = ids[pitched[ids]]
        np.add.at(counts, (onsets[:-1], onsets[1:]), 1)
    return _most_frequent_next(counts)


def bigram_rhythm_next(files: Sequence[TokenFile], vocabulary: Sequence[str]) -> list[int]:
    """For each token, the likeliest rhythm class of the next token (index into RHYTHM_CLASSES), else -1."""
    encode = encoder(vocabulary)
    classes = np.array([RHYTHM_CLASSES.index(rhythm_class(t)) for t in vocabulary])
    counts = np.zeros((len(vocabulary), len(RHYTHM_CLASSES)), dtype=np.int64)
    for file in files:
        ids = encode(file.tokens)
        np.add.at(counts, (ids[:-1], classes[ids[1:]]), 1)
    return _most_frequent_next(counts)


def baselines(files: Sequence[TokenFile], vocabulary: Sequence[str]) -> dict[str, list[int]]:
    """The n-gram baselines ``evaluate`` scores a model against (docs/MODEL_FORMAT.md), fitted on ``files``."""
    found = {"unigram_counts": unigram_counts(files, vocabulary), "bigram_next": bigram_next(files, vocabulary)}
    if any(is_rhythm(t) for t in vocabulary):
        found["onset_bigram_next"] = onset_bigram_next(files, vocabulary)
        found["bigram_rhythm_next"] = bigram_rhythm_next(files, vocabulary)
    return found
