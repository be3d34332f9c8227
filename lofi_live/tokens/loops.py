"""Clips and loops on the grid: where each token lies in time, a clip's end, a loop played again.

The grid rule (:mod:`lofi_live.tokens.grid`) gives one token per 0.5-beat step but cuts a silence longer than a
bar to 8 rests, so a token's index is not always its step. A model with a position input reads each token's
place in its 4/4 bar (``step % 8``, step 0 being the file's first downbeat), so the step of every token is kept
here beside it:

* :func:`timed_tokens`: the grid tokens of notes and the step of each (onsets at their own step, every other
  token one step after the token before it, which is exact because a cut silence always ends at an onset);
* :func:`clip_end_step` / :func:`clip_tokens`: a seed clip is read to its END, the end of its longest track,
  trailing silence included, rounded up to a whole 4/4 bar (one bar at least). The rests between its last
  sounding step and that bar line (at most 8, as in the corpus) close its tokens, so a continuation starts on
  the bar line after the clip: position 0. ``docs/CORPUS_FORMAT.md`` ("Seed clips") states the rule;
* :func:`loop_steps` / :func:`loop_notes` / :func:`looped_tokens`: a loop, the whole bars that cover its notes,
  played ``times`` times (``evaluate --loops``, ``benchmarks/loop_fit.py``). A file's silence after its last note
  is left out here: loop packs often end their tracks bars after the loop (the MLP loops 10 bars later);
  a seed clip, by contrast, is what the musician cut, silence and all;
* :func:`cycle_pitch_classes`: the pitch classes that sound at each step of a loop's cycle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Sequence

from lofi_live.midi.files import NoteEvent, read_midi
from lofi_live.tokens import grid
from lofi_live.tokens import rules as token_rules

#: Beats per 4/4 bar: clips and loops are counted in these bars.
BAR_BEATS = 4
STEPS_PER_BAR = grid.STEPS_PER_BAR


@dataclass(frozen=True)
class TimedTokens:
    """Grid tokens with the step of each (counted from the file's beat 0) and the step where they end."""

    tokens: list[str]
    steps: list[int]
    end_step: int

    @property
    def positions(self) -> list[int]:
        """Each token's position in its 4/4 bar, 0-7."""
        return [step % STEPS_PER_BAR for step in self.steps]


def token_steps(tokens: Sequence[str], notes: Sequence[NoteEvent]) -> list[int]:
    """The step of each grid token of ``notes``: an onset token at its notes' step, any other one step on.

    A hold follows its onset without a gap and a cut silence (more than 8 rests) always ends at an onset, so
    this is exact for tokens made by :func:`lofi_live.tokens.grid.notes_to_tokens` from the same notes.
    """
    onset_steps = sorted({grid.onset_step(note.start) for note in notes})
    steps: list[int] = []
    onsets = iter(onset_steps)
    for token in tokens:
        steps.append(next(onsets) if not token_rules.is_rhythm(token) else (steps[-1] + 1 if steps else 0))
    return steps


def timed_tokens(notes: Sequence[NoteEvent], end_step: int | None = None) -> TimedTokens:
    """The grid tokens of ``notes`` with their steps; ``end_step``: the rests up to it (at most 8) close them."""
    tokens = grid.notes_to_tokens(notes)
    steps = token_steps(tokens, notes)
    last = steps[-1] if steps else -1
    if end_step is None:
        return TimedTokens(tokens, steps, last + 1)
    rests = max(0, min(grid.MAX_RESTS, end_step - last - 1))
    tokens += [token_rules.REST] * rests
    steps += list(range(end_step - rests, end_step))
    return TimedTokens(tokens, steps, max(end_step, last + 1))


def bars_steps(beats: float) -> int:
    """Steps of the whole 4/4 bars that cover ``beats`` (one bar at least)."""
    bars = max(1, math.ceil(beats / BAR_BEATS - 1e-9))
    return bars * STEPS_PER_BAR


def loop_steps(notes: Sequence[NoteEvent]) -> int:
    """A loop's length in steps: the whole bars that cover its notes (a file's trailing silence left out)."""
    return bars_steps(max((note.start + note.duration for note in notes), default=0.0))


def clip_end_step(path: str | os.PathLike) -> int:
    """The step at which a clip ends: its longest track's end (trailing silence counts), up to the bar line."""
    midi = read_midi(path)
    end_ticks = max((sum(message.time for message in track) for track in midi.tracks), default=0)
    last_note = max((note.start + note.duration for note in grid.midi_file_notes(midi)), default=0.0)
    return bars_steps(max(end_ticks / midi.ticks_per_beat, last_note))


def clip_tokens(path: str | os.PathLike) -> TimedTokens:
    """A seed clip's grid tokens and steps, closed by the rests up to its end rounded to the bar (see the notes)."""
    return timed_tokens(grid.file_notes(path), clip_end_step(path))


def loop_notes(notes: Sequence[NoteEvent], length_steps: int, times: int = 2) -> list[NoteEvent]:
    """The notes of a loop ``length_steps`` long played ``times`` times in a row."""
    beats = length_steps * grid.STEP_BEATS
    return sorted(replace(note, start=note.start + k * beats) for k in range(times) for note in notes)


def cut_loop(notes: Sequence[NoteEvent], bars: int) -> list[NoteEvent]:
    """The first ``bars`` bars of ``notes``: notes starting (on the grid) before the cut, shortened to it."""
    end = bars * BAR_BEATS
    return [replace(n, duration=min(n.duration, end - n.start))
            for n in notes if grid.onset_step(n.start) < bars * STEPS_PER_BAR and n.start < end]


def looped_tokens(notes: Sequence[NoteEvent], length_steps: int, times: int = 2) -> TimedTokens:
    """Grid tokens and steps of a loop played ``times`` times, closed by rests up to the end of the last pass."""
    return timed_tokens(loop_notes(notes, length_steps, times), length_steps * times)


def cycle_pitch_classes(notes: Sequence[NoteEvent], length_steps: int) -> list[frozenset[int]]:
    """For each step of a loop's cycle, the pitch classes of its notes that sound during that step.

    A note sounds at step ``s`` from its onset step until it ends, read as the grid reads holds (it still sounds
    a quarter step into ``s``); a note held across the loop's end wraps round to its start.
    """
    sounding: list[set[int]] = [set() for _ in range(length_steps)]
    for note in notes:
        first = grid.onset_step(note.start)
        last = max(first, math.ceil((note.start + note.duration - grid.HOLD_PROBE_BEATS) / grid.STEP_BEATS) - 1)
        for step in range(first, min(last, first + length_steps - 1) + 1):
            sounding[step % length_steps].add(note.pitch % 12)
    return [frozenset(found) for found in sounding]
