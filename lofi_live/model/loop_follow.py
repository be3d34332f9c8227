"""Following a heard loop when sampling: replay it, and vary it within its chords.

A producer plays a loop and wants it carried on: the same changes and groove, with variations worth keeping.
:class:`LoopFollower` is a sampling rule (like the key lock, it shapes what the sampler may choose; it never
touches what ``evaluate`` scores, the network alone) for a grid model:

1. **The loop.** From what was heard (a seed clip, the player's phrase) it finds the loop's period: the one of
   :data:`FOLLOW_PERIODS` that best explains the heard tokens (:func:`lofi_live.model.copy_baselines.period_scores`
   over all of them, compared where either is an onset; the share equal to the token one period before must
   reach :data:`MIN_LOOP_SCORE`, ties going to the shorter period). Without such a repetition the whole phrase, up
   to :data:`MAX_CYCLE` steps, is the cycle. The last cycle heard is the loop, and the continuation starts at
   its beginning (the heard phrase ends on a bar line, docs/CORPUS_FORMAT.md "Seed clips").
2. **Replay** (``replay=True``, for a network without a copy gate). At each step, with weight ``1 - variation``,
   the loop's token at this point of the cycle; with weight ``variation``, the network's own distribution:
   ``p = (1 - v) * onehot(loop token) + v * p_network``. So ``variation`` 0 replays the loop, 1 leaves the
   choice to the network (within 3 and 4). A network with a copy gate copies from its window itself and takes
   the variation there (``replay=False``): no rule stands in for its copying, and 3 and 4 still apply. At
   ``variation`` 0 the loop is replayed as heard for every model: that is what the knob's end means to a
   musician, and sampling from a copy head still strays now and then (0.995 onset alignment, not 1).
3. **Chord tones.** Onset tokens are restricted to those whose pitch classes all sound in the
   loop at this point of its cycle (the last onset at or before it, or the onsets on either side of a rest);
   a single note also stays within the loop's register (:data:`REGISTER_BELOW` / :data:`REGISTER_ABOVE`
   semitones around the loop's lowest and highest notes) and is weighted toward the last note played
   (``exp(-interval / VOICE_LEADING)``: small steps, as a voice moves). A variation is then a voicing, an
   inversion, a chord tone or a line over the loop's own harmony, never a clash with it.
4. **Groove.** In the network's share, tokens that break the loop's rhythm at this step (an onset where the
   loop has none, a hold or rest where it strikes) lose :data:`GROOVE` of their probability: variations
   happen on the loop's own onsets first, as a player re-voices a chord rather than moving it.

The sampler's legato (holding the model's notes instead of some rests) applies to the network's share only,
so a follower takes it over from the sampler (``legato``; the sampler's own is then 0).

Use: :meth:`hear` the loop's token indices, then per step ``probs, mask = follower.shape(probs, mask)``, choose
(``Sampler.choose(probs, mask)``), and :meth:`add` the choice. Built once per vocabulary (about 25 ms for the
shipped model's 1127 tokens on a busy 2-core machine), :meth:`hear` takes a few ms and a step (``shape`` and
``add``) about 35 microseconds, so a live engine can use it beside the network. ``docs/BENCHMARKS.md`` ("Following a loop")
gives what it changes on held-out loops (``benchmarks/loop_fit.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.model.copy_baselines import period_scores
from lofi_live.tokens import rules as token_rules

#: Default weight of the network against the replayed loop (``--variation``), tuned with benchmarks/loop_fit.py.
DEFAULT_VARIATION = 0.75
#: ``generate --follow``: ``chord`` follows the heard loop with this rule, ``off`` leaves the network alone.
FOLLOW_CHOICES = ("chord", "off")
DEFAULT_FOLLOW = "chord"
#: Share of the network's probability taken from tokens that break the loop's rhythm at a step (an onset where
#: the loop has none, a hold or rest where it strikes): measured with benchmarks/loop_fit.py, 0.8 kept the
#: onset alignment at 0.81 against 0.66 without it at variation 0.75, at the same novelty.
GROOVE = 0.8
#: Loop periods in grid steps: half a bar to eight bars.
FOLLOW_PERIODS = (4, 6, 8, 12, 16, 24, 32, 48, 64)
#: Share of heard tokens equal to the token one period back that makes a period a loop.
MIN_LOOP_SCORE = 0.75
#: Longest cycle taken from a phrase that does not repeat.
MAX_CYCLE = 64
#: A single note stays this many semitones below the loop's lowest note / above its highest at most.
REGISTER_BELOW = 3
REGISTER_ABOVE = 7
#: Semitones over which the weight of a single note falls by e from the last note played.
VOICE_LEADING = 5.0


def parse_variation(text: str) -> float:
    """``--variation`` as argparse reads it: a share in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"variation must be in 0..1, not {text}")
    return value


class LoopFollower:
    """Replays a heard loop and keeps the network's variations within its chords (see the module notes)."""

    def __init__(self, vocabulary: Sequence[str], variation: float = DEFAULT_VARIATION, groove: float = GROOVE,
                 legato: float = 0.0, replay: bool = True):
        if not 0.0 <= variation <= 1.0:
            raise LofiError(f"variation must be in 0..1, not {variation}")
        if not 0.0 <= groove <= 1.0:
            raise LofiError(f"groove must be in 0..1, not {groove}")
        self.vocabulary = list(vocabulary)
        self.variation = float(variation)
        self.groove = float(groove)
        self.replay = replay
        #: the sampler's legato, applied here to the network's share only: a replayed rest is the player's own
        self.legato = float(legato)
        self._hold = self.vocabulary.index(token_rules.HOLD) if token_rules.HOLD in self.vocabulary else -1
        self._rest = self.vocabulary.index(token_rules.REST) if token_rules.REST in self.vocabulary else -1
        self._sounding = False
        self._classes = np.array([token_rules.rhythm_class(t) for t in self.vocabulary])
        self._onset = self._classes == "onset"
        self._pcs = np.zeros((len(self.vocabulary), 12), bool)
        self._pitch = np.full(len(self.vocabulary), -1)
        for i, token in enumerate(self.vocabulary):
            if self._onset[i]:
                self._pcs[i, list(token_rules.token_pitch_classes(token))] = True
                if not token_rules.is_chord(token):
                    self._pitch[i] = token_rules.note_to_midi(token)
        self.loop: list[int] = []
        self.period = 0
        self._fits: list[np.ndarray] = []
        self._step = 0
        self._last_pitch = -1

    def hear(self, heard: Sequence[int]) -> None:
        """Take the loop from heard token indices (ending on a bar line); the next step is its cycle's start."""
        tokens = np.asarray([int(t) for t in heard], np.int64)
        if not len(tokens) or not np.any(self._onset[tokens]):
            self.loop, self.period, self._fits = [], 0, []
            return
        self.period = self._period(tokens)
        self.loop = tokens[-self.period :].tolist()
        self._fits = self._chord_masks()
        self._step = 0
        pitched = [self._pitch[t] for t in tokens if self._pitch[t] >= 0]
        self._last_pitch = pitched[-1] if pitched else -1

    def _period(self, tokens: np.ndarray) -> int:
        """The loop's period (see the module notes): the best repeating one, else the whole phrase."""
        candidates = [p for p in FOLLOW_PERIODS if 2 * p <= len(tokens)]
        if candidates:
            scores = period_scores(tokens, np.array([len(tokens)]), len(tokens), candidates,
                                   onsets=self._onset[tokens])[0]
            best = int(np.argmax(scores))
            if scores[best] >= MIN_LOOP_SCORE:
                return candidates[best]
        return min(len(tokens), MAX_CYCLE)

    def _sounding_at(self, where: int) -> set[int]:
        """Pitch classes sounding at a step of the cycle: the last onset at or before it unless a rest
        came since; at a rest, the onsets on either side."""
        size = len(self.loop)
        for back in range(size):
            token = self.loop[(where - back) % size]
            if self._onset[token]:
                return set(np.flatnonzero(self._pcs[token]))
            if self._classes[token] == "rest":
                break
        around: set[int] = set()
        for direction in (-1, 1):
            for offset in range(1, size):
                token = self.loop[(where + direction * offset) % size]
                if self._onset[token]:
                    around |= set(np.flatnonzero(self._pcs[token]))
                    break
        return around

    def _chord_masks(self) -> list[np.ndarray]:
        """For each step of the cycle, the vocabulary tokens allowed there: holds, rests and the fitting onsets."""
        pitches = [self._pitch[t] for t in self.loop if self._pitch[t] >= 0]
        pitches += [p for t in self.loop if self._onset[t] and self._pitch[t] < 0
                    for p in token_rules.token_pitches(self.vocabulary[t])]
        low, high = (min(pitches) - REGISTER_BELOW, max(pitches) + REGISTER_ABOVE) if pitches else (0, 127)
        in_register = (self._pitch < 0) | ((self._pitch >= low) & (self._pitch <= high))
        masks = []
        for where in range(len(self.loop)):
            sounding = np.zeros(12, bool)
            sounding[list(self._sounding_at(where))] = True
            fits = ~np.any(self._pcs & ~sounding, axis=1) & in_register
            masks.append(np.where(self._onset, fits, True))
        return masks

    @property
    def active(self) -> bool:
        """Whether a loop has been heard."""
        return bool(self.loop)

    def shape(self, probs: np.ndarray, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The next step's probabilities and allowed tokens, following the loop (unchanged before :meth:`hear`)."""
        if not self.active:
            return probs, allowed
        where = self._step % len(self.loop)
        p = np.asarray(probs, np.float64).copy()
        mask = None if allowed is None else np.asarray(allowed, bool)
        if self.legato and self._sounding and self._hold >= 0 and self._rest >= 0:
            moved = self.legato * p[self._rest]
            p[self._rest] -= moved
            p[self._hold] += moved
        fits = self._fits[where] if mask is None else self._fits[where] & mask
        if np.any(fits & self._onset):
            mask = fits
        if self._last_pitch >= 0:
            single = self._pitch >= 0
            p[single] *= np.exp(-np.abs(self._pitch[single] - self._last_pitch) / VOICE_LEADING)
        if self.groove:
            # the loop's groove: onsets where it has none, and silence where it strikes, are damped
            p = np.where(self._onset != self._onset[self.loop[where]], p * (1.0 - self.groove), p)
        if mask is not None and np.any(mask):
            p = np.where(mask, p, 0.0)
        total = p.sum()
        p = p / total if total > 0 else p
        if not self.replay and self.variation > 0:
            return p, mask
        copy = np.zeros_like(p)
        copy[self.loop[where]] = 1.0
        return (1.0 - self.variation) * copy + self.variation * p, mask

    def seek(self, step: int) -> None:
        """The next step is step ``step`` of the continuation (0: the loop's start): a live engine whose
        answer skips a step (a late token) stays on the loop's cycle."""
        self._step = int(step)

    def add(self, token: int) -> None:
        """Follow the token chosen for this step."""
        if self._pitch[token] >= 0:
            self._last_pitch = int(self._pitch[token])
        if token == self._rest:
            self._sounding = False
        elif token != self._hold:
            self._sounding = True
        self._step += 1
