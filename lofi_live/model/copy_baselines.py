"""Copy baselines: "what came one loop ago", the bar a network that listens to a loop has to beat.

LoFi is loop music, so the plainest predictor of the next grid step is the step one loop earlier. Three are
measured by ``lofi-live evaluate`` on the same positions as the network:

* ``copy8`` / ``copy16``: the token 8 or 16 steps back (one or two 4/4 bars);
* ``copy_adaptive``: the token one period back, the period chosen among :data:`PERIODS` as the one that best
  explains the window so far: the largest share of the last :data:`SPAN` tokens equal to the token one period
  before them, compared where either of the two is an onset (ties go to the shorter period). The span is
  fixed, whatever the model's window, so the baseline is the same for every model (a window of 320 tokens
  spans several loops of a stream, and choosing the period over all of it halved the baseline's onset top-1);
  the comparisons may reach before the span, as far as the stream goes, which only helps the baseline. (Comparing at holds and
  rests too was weaker on the held-out test creators' loops: onset top-1 0.184 against 0.199.)

Each predicts one token, so its top-1 is that token, its rhythm class that token's class, and its onset
prediction (scored where the true token is an onset) the onset sounding one period back: the last onset at
or before that step. The same period choice serves the live rule of :mod:`lofi_live.model.loop_follow`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Periods in grid steps the adaptive copy chooses among: half a bar to four bars, in 4/4 and 3/4 shapes.
PERIODS = (4, 6, 8, 12, 16, 24, 32)
#: Tokens before each position over which the adaptive copy scores the periods: 4 bars.
SPAN = 32


def period_scores(tokens: np.ndarray, positions: np.ndarray, window: int,
                  periods: Sequence[int] = PERIODS, floors: np.ndarray | None = None,
                  onsets: np.ndarray | None = None) -> np.ndarray:
    """``(len(positions), len(periods))``: for each position ``t``, the share of the tokens in ``[t - window, t)``
    equal to the token one period before them; -1 where no comparison is possible or ``t - period`` lies
    before the stream's start (``floors``: each position's own start, e.g. its file's; 0 by default).

    ``onsets`` (a boolean per token): compare only where either token is an onset, so that a rhythm repeated
    under changing chords (``C hold hold rest F hold hold rest``) does not pass for a loop of one chord.
    """
    tokens = np.asarray(tokens)
    positions = np.asarray(positions, dtype=np.int64)
    floors = np.zeros_like(positions) if floors is None else np.asarray(floors, dtype=np.int64)
    scores = np.full((len(positions), len(periods)), -1.0)
    for column, period in enumerate(periods):
        start = np.minimum(np.maximum(positions - window, floors + period), positions)
        same = np.zeros(len(tokens) + 1, np.int64)
        compared = np.zeros(len(tokens) + 1, np.int64)
        if period < len(tokens):
            counted = np.ones(len(tokens) - period, bool)
            if onsets is not None:
                counted = onsets[period:] | onsets[:-period]
            same[period + 1 :] = np.cumsum((tokens[period:] == tokens[:-period]) & counted)
            compared[period + 1 :] = np.cumsum(counted)
        matches = same[positions] - same[start]
        counted = compared[positions] - compared[start]
        usable = (counted > 0) & (positions - period >= floors)
        scores[usable, column] = matches[usable] / counted[usable]
    return scores


def adaptive_periods(tokens: np.ndarray, positions: np.ndarray, window: int, periods: Sequence[int] = PERIODS,
                     floors: np.ndarray | None = None, onsets: np.ndarray | None = None) -> np.ndarray:
    """The period chosen at each position (0 where none can be used): the best score, ties to the shorter."""
    scores = period_scores(tokens, positions, window, periods, floors, onsets)
    best = np.argmax(scores, axis=1)  # the first of equal scores: the shorter period
    chosen = np.asarray(periods)[best]
    return np.where(scores[np.arange(len(positions)), best] >= 0, chosen, 0)


def copy_scores(tokens: np.ndarray, targets: np.ndarray, classes: np.ndarray, positions: np.ndarray,
                periods: np.ndarray, floors: np.ndarray | None = None) -> dict[str, float]:
    """``top1``, ``rhythm_accuracy`` and ``onset_top1`` of copying the token ``periods`` back at ``positions``.

    ``tokens``: the input indices of the stream; ``targets``: the true indices (-1 outside the vocabulary);
    ``classes``: the rhythm class of each stream token (0 = onset, 1 = hold, 2 = rest). A period of 0, or one
    reaching before the stream (``floors``, as in :func:`period_scores`), predicts nothing and misses.
    """
    tokens, classes = np.asarray(tokens), np.asarray(classes)
    positions = np.asarray(positions, dtype=np.int64)
    floors = np.zeros_like(positions) if floors is None else np.asarray(floors, dtype=np.int64)
    periods = np.broadcast_to(np.asarray(periods, dtype=np.int64), positions.shape)
    source = positions - periods
    usable = (periods > 0) & (source >= floors)
    source = np.where(usable, source, 0)
    truth = targets[positions]
    hit = usable & (tokens[source] == truth) & (truth >= 0)
    rhythm = usable & (classes[source] == classes[positions])
    latest = np.maximum.accumulate(np.where(classes == 0, np.arange(len(tokens)), -1))
    sounding = latest[source]
    onset_rows = classes[positions] == 0
    onset_hit = usable & (sounding >= floors) & (tokens[np.maximum(sounding, 0)] == truth) & (truth >= 0)
    return {"top1": float(np.mean(hit)) if len(hit) else 0.0,
            "rhythm_accuracy": float(np.mean(rhythm)) if len(rhythm) else 0.0,
            "onset_top1": float(np.sum(onset_hit[onset_rows]) / max(int(np.sum(onset_rows)), 1))}


def copy_baselines(tokens: np.ndarray, targets: np.ndarray, classes: np.ndarray, positions: np.ndarray,
                   floors: np.ndarray | None = None) -> dict[str, float]:
    """Every copy baseline's figures at ``positions``, keyed ``baseline_copy8_top1`` ... (see the module notes)."""
    found: dict[str, float] = {}
    adaptive = adaptive_periods(tokens, positions, SPAN, PERIODS, floors, onsets=np.asarray(classes) == 0)
    for name, periods in (("copy8", 8), ("copy16", 16), ("copy_adaptive", adaptive)):
        for metric, value in copy_scores(tokens, targets, classes, positions, periods, floors).items():
            found[f"baseline_{name}_{metric}"] = value
    return found
