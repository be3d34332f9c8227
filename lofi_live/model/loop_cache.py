"""The loop cache: a next-token distribution read from the window itself, mixed into the network's.

LoFi is loop music: what comes next is very often what followed the same token a bar or two ago.
A network trained on ~100 short loops learns those loops by heart rather than the act of carrying
on whatever loop it is given (on held-out LoFi files the network alone is about as good as a
bigram, while "copy what followed the last occurrence of the previous token" is three times
better). The cache is the classic remedy of language modelling (a cache model, as in Kuhn & De
Mori 1990 and Grave et al. 2017's continuous cache): every earlier occurrence of the window's last
token votes for the token that followed it, recent occurrences weigh more, and the votes are mixed
with the network's probabilities:

    p = (1 - weight) * p_network + weight * p_cache      (p_network alone when nothing matches)

The weight and decay are part of the exported model (``loop_cache`` in NAME.json, see
docs/MODEL_FORMAT.md); weight 0 or no entry leaves the network's probabilities untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class LoopCache:
    """Mixing weight in [0, 1) and per-token decay in (0, 1] of the votes."""

    weight: float = 0.0
    decay: float = 0.9

    @property
    def active(self) -> bool:
        return self.weight > 0.0

    def votes(self, window: Sequence[int], size: int) -> np.ndarray | None:
        """Normalised votes for the next token, or None when the last token occurs only once."""
        tokens = list(window)
        if len(tokens) < 2:
            return None
        last = tokens[-1]
        votes = np.zeros(size, np.float64)
        weight = 1.0
        for position in range(len(tokens) - 2, -1, -1):
            if tokens[position] == last:
                votes[tokens[position + 1]] += weight
            weight *= self.decay
        total = votes.sum()
        return votes / total if total > 0 else None

    def mix(self, probs: np.ndarray, window: Sequence[int]) -> np.ndarray:
        """The network's ``probs`` (V,) mixed with the cache's votes for ``window``."""
        if not self.active:
            return probs
        votes = self.votes(window, probs.shape[-1])
        if votes is None:
            return probs
        return ((1.0 - self.weight) * probs + self.weight * votes).astype(np.float32)
