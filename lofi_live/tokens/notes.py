"""Tokens back to notes, under either tokenization: what ``generate`` writes and a sweep listens to.

``seed``: one event per grid step (the seed's ``offset += 0.5``), each lasting one step. ``grid``: an
onset sounds until the next onset or rest, holds extend it, rests are silence
(:func:`lofi_live.tokens.grid.tokens_to_notes`).
"""

from __future__ import annotations

from typing import Sequence

from lofi_live.midi.files import NoteEvent
from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens import rules as token_rules

#: The velocity of notes written from tokens (they carry none).
VELOCITY = 80


def tokens_to_notes(
    tokens: Sequence[str], kind: str = "seed", grid_beats: float = token_rules.GRID_BEATS, velocity: int = VELOCITY
) -> list[NoteEvent]:
    """The notes of tokens under the tokenization ``kind`` (seed or grid)."""
    if kind == "grid":
        return grid_tokens.tokens_to_notes(tokens, velocity)
    return [
        NoteEvent(step * grid_beats, grid_beats, pitch, velocity)
        for step, token in enumerate(tokens)
        for pitch in token_rules.token_pitches(token)
    ]


def longest_run(items: Sequence) -> int:
    """The longest run of one item repeated back to back (issue 4's "no token more than 8 in a row")."""
    best = run = 0
    previous = object()
    for item in items:
        run = run + 1 if item == previous else 1
        previous = item
        best = max(best, run)
    return best
