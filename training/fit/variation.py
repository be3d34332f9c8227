"""Loops played again with small changes: the training streams of ``fit --vary-loops``.

A producer plays a loop and wants it carried on, the same changes and groove with variations worth
keeping. A network learns to do that from streams where loops come back: each training file is played
2 to K times in a row, every pass after the first with small random changes, and all files follow
one another in a shuffled order, as loops do in a session (and as the test loops do in ``evaluate``'s
one-stream protocol). Each pass is padded with rests to the bar position its loop began on, so every
repeat starts on the same beat as the first.

The changes, each drawn per onset of a repeated pass:

* **drop** (:data:`DROP`): the onset is left out, its step becomes ``hold`` after a sounding step, else ``rest``;
* **shift** (:data:`SHIFT`): an onset followed by a ``hold`` moves one step later (they swap);
* **thin** (:data:`THIN`): a chord of 4 or more pitches loses one of them (re-voiced thinner).
"""

from __future__ import annotations

import random
from typing import Sequence

from lofi_live.tokens.grid import STEPS_PER_BAR, bar_positions
from lofi_live.tokens.rules import HOLD, REST, is_rhythm, onset_token, token_pitches
from training.fit.sequences import TokenFile, positions_of

DROP = 0.06
SHIFT = 0.06
THIN = 0.15


def vary(tokens: Sequence[str], rng: random.Random) -> list[str]:
    """One repeated pass: the tokens with onsets dropped, shifted a step later or thinned (see the module)."""
    varied = list(tokens)
    for index, token in enumerate(varied):
        if is_rhythm(token):
            continue
        draw = rng.random()
        if draw < DROP:
            previous = varied[index - 1] if index else REST
            varied[index] = REST if previous == REST else HOLD
        elif draw < DROP + SHIFT and index + 1 < len(varied) and varied[index + 1] == HOLD:
            varied[index], varied[index + 1] = HOLD if index and varied[index - 1] != REST else REST, token
        elif draw < DROP + SHIFT + THIN:
            pitches = token_pitches(token)
            if len(pitches) >= 4:
                pitches.pop(rng.randrange(len(pitches)))
                varied[index] = onset_token(pitches)
    return varied


def passes(file: TokenFile, times: int, rng: random.Random, varied: bool = True) -> TokenFile:
    """A file played ``times`` in a row, each padded to its start position; every pass after the first is
    varied unless not ``varied``."""
    positions = positions_of(file)
    pad = (positions[0] - positions[-1] - 1) % STEPS_PER_BAR if is_rhythm_file(file) else 0
    one = list(file.tokens) + [REST] * pad
    one_positions = positions + bar_positions(pad, positions[-1] + 1)
    tokens: list[str] = []
    steps: list[int] = []
    for number in range(times):
        tokens += vary(one, rng) if varied and number else one
        steps += one_positions
    while tokens and tokens[-1] == REST:  # the grid drops trailing rests
        tokens.pop()
        steps.pop()
    return TokenFile(f"{file.name}x{times}", tokens, steps)


def is_rhythm_file(file: TokenFile) -> bool:
    """Grid tokens (with holds and rests), as opposed to the seed's onset-only tokens."""
    return any(is_rhythm(t) for t in file.tokens)


def loop_stream(files: Sequence[TokenFile], most: int, rounds: int, seed: int) -> list[TokenFile]:
    """``rounds`` streams, each of every file played 2..``most`` times (varied), the files in a shuffled order."""
    rng = random.Random(seed)
    streams: list[TokenFile] = []
    for number in range(rounds):
        order = list(files)
        rng.shuffle(order)
        played = [passes(f, rng.randint(min(2, most), most), rng) for f in order]
        streams.append(concatenate(played, f"loops-{number}"))
    return streams


def concatenate(files: Sequence[TokenFile], name: str) -> TokenFile:
    """Files one after the other as one stream, each keeping its own bar positions."""
    tokens: list[str] = []
    steps: list[int] = []
    for file in files:
        tokens += file.tokens
        steps += positions_of(file)
    return TokenFile(name, tokens, steps)


def validation_stream(files: Sequence[TokenFile]) -> list[TokenFile]:
    """Validation under ``--vary-loops``: every file played twice as it is, all in one stream (in name order)."""
    if not files:
        return []
    rng = random.Random(0)
    return [concatenate([passes(f, 2, rng, varied=False) for f in sorted(files, key=lambda f: f.name)], "validation")]
