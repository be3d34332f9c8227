"""Choosing the next token: argmax, temperature, top-k, a seeded generator, key/scale lock, key detection.

* :class:`Sampler` turns a probability row into one token index. ``temperature = 0`` is the seed's
  argmax; above 0 the probabilities are sharpened or flattened (``p ** (1 / T)``), cut to the ``top_k``
  most likely and drawn with a seeded NumPy generator, so ``--seed`` makes a run reproducible. The
  ``temperature`` attribute may be changed while playing (a MIDI CC does).
* A repetition guard (``max_repeat``) forbids a token that was just chosen ``max_repeat`` times in a
  row when sampling (never at temperature 0, which stays exactly the seed's argmax). With a grid model
  it counts onset tokens only (``exempt``: :func:`rhythm_mask`): a chord held for two bars is one onset
  and 15 holds, and a long silence is rests, so holds and rests are neither blocked nor do they break
  a run (``C4 hold C4 hold C4`` is C4 three times in a row).
* Legato (grid models, ``legato`` in [0, 1)): while the sampler's own last onset still sounds, that
  share of the probability of ``rest`` moves to ``hold``, so a note the network would cut is held on
  instead, as a sustain pedal holds it. The grid rule reads MIDI files without the sustain pedal (the
  shared conformance vectors ignore it), and 42 of the 113 LoFi loops hold their chords with the pedal,
  so the network learnt many pedalled loops as staccato chords and rests; legato gives back the
  sustain a musician hears. It changes what is played, never what ``evaluate`` scores (the network).
* :class:`ScaleLock` / :func:`scale_mask`: only tokens whose pitch classes all fit a key and scale.
* :func:`detect_key`: Krumhansl-Schmuckler key finding over the pitch classes of tokens.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError

#: Default sampling temperature and top-k. Argmax (temperature 0) loops on one or a few tokens, the
#: seed's weakness (issue 4). Measured on the shipped model (exported_models/lofi, loop cache 0.5) with
#: benchmarks/sampling_sanity.py, 500 steps from each seed window: argmax -> min 1 distinct token, runs
#: of 500; T 0.9/top-10 -> min 18 distinct (too loopy with the cache); T 1.0/top-16 -> min 20;
#: T 1.0/top-24 -> min 24 distinct over 30 seeds (mean 39), longest run 6, 89 % of pitch classes in the
#: detected key; T 1.0 over all tokens -> more variety but 85 % in key.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 24
#: Never sample the same token more than this many times in a row (issue 4: no run longer than 8).
DEFAULT_MAX_REPEAT = 6
#: Share of ``rest`` moved to ``hold`` while the model's own note sounds (grid models; see the notes above).
DEFAULT_LEGATO = 0.5
#: Temperatures below this are treated as 0 (argmax): dividing log-probabilities by ~0 overflows.
MIN_TEMPERATURE = 1e-3

#: Scales as semitone offsets from the key note.
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "pentatonic_major": (0, 2, 4, 7, 9),
    "pentatonic_minor": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
_SCALE_ALIASES = {
    "ionian": "major", "aeolian": "minor", "natural_minor": "minor", "harmonic": "harmonic_minor",
    "pentatonic": "pentatonic_major", "major_pentatonic": "pentatonic_major",
    "minor_pentatonic": "pentatonic_minor",
}
_KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Krumhansl-Kessler key profiles (C major / C minor).
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def parse_key(text: str) -> int:
    """``A`` -> 9, ``Bb``/``B-``/``A#`` -> 10, ``c#`` -> 1; raises LofiError otherwise."""
    value = text.strip()
    if not value or value[0].upper() not in "CDEFGAB":
        raise LofiError(f"unknown key {text!r} (use C, C#, Db, ..., B, or auto)")
    pc = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[value[0].upper()]
    for mark in value[1:]:
        if mark == "#":
            pc += 1
        elif mark in "b-":
            pc -= 1
        else:
            raise LofiError(f"unknown key {text!r} (use C, C#, Db, ..., B, or auto)")
    return pc % 12


def parse_scale(text: str) -> str:
    """A scale name (``minor``, ``dorian``, ``pentatonic-minor``...) in its canonical form."""
    name = text.strip().lower().replace("-", "_").replace(" ", "_")
    name = _SCALE_ALIASES.get(name, name)
    if name not in SCALES:
        raise LofiError(f"unknown scale {text!r} (choose from {', '.join(SCALES)})")
    return name


def key_name(key_pc: int, scale: str) -> str:
    return f"{_KEY_NAMES[key_pc % 12]} {scale.replace('_', ' ')}"


def scale_pitch_classes(key_pc: int, scale: str) -> set[int]:
    return {(key_pc + step) % 12 for step in SCALES[parse_scale(scale)]}


def scale_mask(vocabulary: Sequence[str], key_pc: int, scale: str) -> np.ndarray:
    """Boolean mask of the tokens whose pitch classes all belong to the scale (may be all False)."""
    allowed = scale_pitch_classes(key_pc, scale)
    return np.array([token_rules.token_pitch_classes(t) <= allowed for t in vocabulary], dtype=bool)


class ScaleLock:
    """A key/scale constraint over a vocabulary that never leaves an empty choice.

    ``mask`` holds the tokens that fit; when no token fits at all, the tokens with the fewest pitch
    classes outside the scale are allowed instead. ``fit(i)`` maps any token index to the nearest
    allowed token (:func:`lofi_live.tokens.rules.token_distance`), for a choice made without the mask.
    """

    def __init__(self, vocabulary: Sequence[str], key_pc: int, scale: str):
        self.vocabulary = list(vocabulary)
        self.key_pc, self.scale = key_pc % 12, parse_scale(scale)
        allowed = scale_pitch_classes(self.key_pc, self.scale)
        outside = np.array([len(token_rules.token_pitch_classes(t) - allowed) for t in self.vocabulary])
        self.strict = outside == 0
        self.mask = outside == outside.min()
        self._allowed = np.flatnonzero(self.mask)
        self._nearest: dict[int, int] = {}

    def fit(self, index: int) -> int:
        if self.mask[index]:
            return index
        if index not in self._nearest:
            token = self.vocabulary[index]
            self._nearest[index] = int(min(self._allowed, key=lambda i: token_rules.token_distance(token, self.vocabulary[i])))
        return self._nearest[index]

    def __repr__(self) -> str:
        return f"<ScaleLock {key_name(self.key_pc, self.scale)}: {int(self.mask.sum())}/{len(self.mask)} tokens>"


class Sampler:
    """Picks a token index from a probability row. ``temperature`` may be changed at any time."""

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = DEFAULT_TOP_K,
        seed: int | None = None,
        max_repeat: int | None = DEFAULT_MAX_REPEAT,
        exempt: np.ndarray | None = None,
        legato: float = 0.0,
    ):
        if temperature < 0 or not math.isfinite(temperature):
            raise LofiError(f"temperature must be 0 or more, not {temperature}")
        if top_k is not None and top_k < 1:
            raise LofiError(f"top-k must be at least 1, not {top_k}")
        self.temperature = float(temperature)
        self.top_k = top_k
        if max_repeat is not None and max_repeat < 0:
            raise LofiError(f"max-repeat must be 0 or more, not {max_repeat}")
        self.max_repeat = max_repeat
        #: tokens the repetition guard ignores (hold and rest of a grid model), or None
        self.exempt = None if exempt is None or not np.any(exempt) else np.asarray(exempt, dtype=bool)
        if not 0.0 <= legato < 1.0:
            raise LofiError(f"legato must be in [0, 1), not {legato}")
        self.legato = float(legato)
        #: indices of hold and rest in the vocabulary (-1 without them): set by :meth:`follow`
        self.hold = self.rest = -1
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._last = -1
        self._run = 0
        self._sounding = False

    def follow(self, vocabulary: Sequence[str]) -> None:
        """Take the rhythm tokens of a vocabulary: exempt from the repetition guard, and legato's hold and rest."""
        self.exempt = rhythm_mask(vocabulary)
        self.hold = vocabulary.index(token_rules.HOLD) if token_rules.HOLD in vocabulary else -1
        self.rest = vocabulary.index(token_rules.REST) if token_rules.REST in vocabulary else -1

    def forget(self) -> None:
        """Forget the recent choices (the repetition guard's memory, and whether its last note sounds)."""
        self._last, self._run, self._sounding = -1, 0, False

    def choose(self, probs: np.ndarray, allowed: np.ndarray | None = None) -> int:
        """One token index from ``probs`` (``(V,)``), restricted to ``allowed`` when given.

        The restriction renormalises over the allowed tokens; an all-False mask is ignored rather than
        leaving nothing to choose.
        """
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if self.legato and self._sounding and self.hold >= 0 and self.rest >= 0:
            p = p.copy()
            moved = self.legato * p[self.rest]
            p[self.rest] -= moved
            p[self.hold] += moved
        mask = None
        if allowed is not None:
            mask = np.asarray(allowed, dtype=bool)
            if not mask.any():
                mask = None
        temperature = self.temperature
        if temperature < MIN_TEMPERATURE:
            scores = p if mask is None else np.where(mask, p, -1.0)
            choice = int(np.argmax(scores))
        else:
            logits = np.log(np.maximum(p, 1e-30)) / temperature
            if mask is not None:
                logits = np.where(mask, logits, -np.inf)
            if self.max_repeat and self._run >= self.max_repeat and 0 <= self._last < len(logits):
                blocked = logits.copy()
                blocked[self._last] = -np.inf
                if np.isfinite(blocked).any():
                    logits = blocked
            k = self.top_k
            if k is not None and k < len(logits):
                cut = np.partition(logits, -k)[-k]
                logits = np.where(logits >= cut, logits, -np.inf)
            logits = logits - logits.max()
            weights = np.exp(logits)
            cumulative = np.cumsum(weights)
            choice = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
            choice = min(choice, len(weights) - 1)
            while weights[choice] == 0:  # never land on an excluded token through rounding
                choice -= 1
        if choice == self.rest:
            self._sounding = False
        elif choice != self.hold:
            self._sounding = True
        if self.exempt is not None and self.exempt[choice]:
            return choice
        if choice == self._last:
            self._run += 1
        else:
            self._last, self._run = choice, 1
        return choice


def legato_share(text: str) -> float:
    """``--legato`` as argparse reads it: a share in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"legato must be in [0, 1), not {text}")
    return value


#: ``--legato``'s help, shared by ``generate`` and ``run``.
LEGATO_HELP = (f"grid models: share of a rest that would cut the model's sounding note held on instead, as a "
               f"sustain pedal would, 0 = the network's own rhythm (default {DEFAULT_LEGATO:g})")


def rhythm_mask(vocabulary: Sequence[str]) -> np.ndarray | None:
    """The tokens the repetition guard leaves alone: ``hold`` and ``rest`` (None for a seed vocabulary).

    A grid model sustains a chord or keeps a silence by repeating them, so only its onsets are guarded.
    """
    mask = np.array([token_rules.is_rhythm(t) for t in vocabulary], dtype=bool)
    return mask if mask.any() else None


def detect_key(tokens: Iterable[str]) -> tuple[int, str]:
    """``(key_pc, "major" | "minor")`` of tokens by Krumhansl-Schmuckler correlation.

    Each token adds one to each of its pitch classes (a chord's pitch classes count like its notes).
    Malformed tokens are skipped; no usable token gives C major.
    """
    histogram = np.zeros(12)
    for token in tokens:
        try:
            for pc in token_rules.token_pitch_classes(token):
                histogram[pc] += 1
        except token_rules.TokenError:
            continue
    if not histogram.any() or np.ptp(histogram) == 0:
        return 0, "major"
    best = (-2.0, 0, "major")
    for scale, profile in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for key in range(12):
            score = float(np.corrcoef(histogram, np.roll(profile, key))[0, 1])
            if score > best[0] + 1e-12:
                best = (score, key, scale)
    return best[1], best[2]


def key_lock(vocabulary: Sequence[str], key: str | None, scale: str | None, heard: Iterable[str] = ()) -> ScaleLock | None:
    """The one key-lock rule of ``generate`` and the live engine: ``--key`` and ``--scale`` -> a :class:`ScaleLock`.

    No ``key``: no lock. A key name: that key, in ``scale`` (default minor). ``auto``: the key detected from
    the tokens ``heard`` (:func:`detect_key`), in ``scale`` when given, else in the detected major or minor.
    """
    if not key:
        return None
    if key.strip().lower() == "auto":
        key_pc, detected = detect_key(heard)
        return ScaleLock(vocabulary, key_pc, parse_scale(scale) if scale else detected)
    return ScaleLock(vocabulary, parse_key(key), parse_scale(scale or "minor"))
