"""The grid tokenization: one token per 0.5-beat step, with ``hold`` and ``rest``, built on mido.

The seed's tokenization keeps only the order of onsets, so a chord held for a bar and an eighth note
are the same one-step token. Here every grid step of a file is a token (``docs/CORPUS_FORMAT.md``):

* a note's onset belongs to step ``floor(onset_beats / 0.5 + 0.5)`` (the nearest step, ties late);
  channel 10 (drums) is left out; all other tracks and channels are merged;
* a step with onsets is an onset token: one pitch gives its note token, two or more the chord token
  of all their pitches (:func:`lofi_live.tokens.rules.onset_token`);
* a step without onsets is ``hold`` when a note that began at an earlier step still sounds at the
  step's time plus a quarter step (0.125 beat), else ``rest``;
* trailing rests are dropped and at most :data:`MAX_RESTS` (one bar) rests in a row are kept.

:func:`tokens_to_notes` is the inverse used by ``generate``: an onset's notes sound until the next
onset or rest, so grid tokens -> ``.mid`` -> grid tokens is the identity. The live engine applies the
same per-step rule to what is played (:func:`step_token`).
"""

from __future__ import annotations

import fnmatch
import math
import os
from typing import Iterable, Sequence

import mido
import numpy as np

from lofi_live.tokens import rules as token_rules
from lofi_live.midi.files import NoteEvent, read_midi, track_notes

#: Beats per grid step.
STEP_BEATS = token_rules.GRID_BEATS
#: How far into a step (in beats) a note must still sound for the step to be a hold.
HOLD_PROBE_BEATS = STEP_BEATS / 4
#: Longest run of rests kept (one 4/4 bar of eighths); longer silences are cut to this.
MAX_RESTS = 8
#: MIDI channel 10, drums (0-based 9): not part of the harmony or melody the model plays.
DRUM_CHANNEL = 9
#: Rules stamp of this tokenization, recorded in corpora and caches.
RULES = ("grid v1: one token per 0.5 beat; onset step floor(beats/0.5+0.5); drums (channel 10) left out; "
         "hold if a note from an earlier step sounds at step+0.125 beat, else rest; trailing rests dropped; "
         f"at most {MAX_RESTS} rests in a row")


#: Grid steps in a 4/4 bar: a step's position in its bar is 0-7, 0 on the downbeat.
STEPS_PER_BAR = 8


def bar_positions(count: int, first: int = 0) -> list[int]:
    """Positions in the 4/4 bar of ``count`` consecutive grid steps, the first at position ``first``.

    A file's step ``k`` (counted from the file's start, beat 0, a downbeat) is at ``k % STEPS_PER_BAR``; the
    live engine counts from the clock's bar line. A model with a position input reads one beside each token.
    """
    return [(first + offset) % STEPS_PER_BAR for offset in range(count)]


def onset_step(beats: float) -> int:
    """The grid step a note starting at ``beats`` belongs to: the nearest one, a tie going late."""
    return math.floor(beats / STEP_BEATS + 0.5)


def first_step_from(beats: float) -> int:
    """The first grid step at or after ``beats`` (where a clock that starts or jumps there can go on)."""
    return math.ceil(beats / STEP_BEATS - 1e-9)


def step_token(onset_pitches: Iterable[int], sounding: bool) -> str:
    """One step's token: its onsets' token, else ``hold`` while an earlier note sounds, else ``rest``."""
    pitches = sorted(set(onset_pitches))
    if pitches:
        return token_rules.onset_token(pitches)
    return token_rules.HOLD if sounding else token_rules.REST


def notes_to_tokens(notes: Iterable[NoteEvent]) -> list[str]:
    """Grid tokens of notes timed in beats (drums and zero-length notes included as given)."""
    return notes_to_grid(notes)[0]


def notes_to_grid(notes: Iterable[NoteEvent]) -> tuple[list[str], list[int]]:
    """Grid tokens of notes timed in beats, and each token's position in its 4/4 bar (0-7).

    The position is the token's grid step counted from beat 0 (a downbeat), modulo
    :data:`STEPS_PER_BAR`: it stays right where a long silence was cut to :data:`MAX_RESTS` rests, which
    a count of the kept tokens would not.
    """
    onsets: dict[int, list[int]] = {}
    ends: list[tuple[int, float]] = []  # (onset step, end beat) of every note
    for note in notes:
        step = onset_step(note.start)
        onsets.setdefault(step, []).append(note.pitch)
        ends.append((step, note.start + note.duration))
    if not onsets:
        return [], []
    # the last step whose probe time a note still sounds at (holds after the last onset)
    last = max(max(onsets), *(math.ceil((end - HOLD_PROBE_BEATS) / STEP_BEATS) - 1 for _, end in ends))
    # the latest end of the notes begun at each step, then its running maximum: a step s without
    # onsets holds when a note begun before s ends after s's probe time
    latest: dict[int, float] = {}
    for step, end in ends:
        latest[step] = max(latest.get(step, -math.inf), end)
    found: list[str] = []
    steps: list[int] = []
    reach = -math.inf  # latest end of the notes begun before the current step
    rests = 0
    for step in range(min(0, min(onsets)), last + 1):
        probe = step * STEP_BEATS + HOLD_PROBE_BEATS
        token = step_token(onsets.get(step, ()), reach > probe)
        reach = max(reach, latest.get(step, -math.inf))
        if token == token_rules.REST:
            rests += 1
            if rests > MAX_RESTS:
                continue
        else:
            rests = 0
        found.append(token)
        steps.append(step % STEPS_PER_BAR)
    while found and found[-1] == token_rules.REST:
        found.pop()
        steps.pop()
    return found, steps


def midi_file_notes(midi: mido.MidiFile, tracks: str | None = None) -> list[NoteEvent]:
    """Every note of an open MIDI file but the drums, all tracks and channels merged, timed in beats.

    ``tracks`` (a glob, case-insensitive) keeps only the tracks whose name matches it, e.g. ``PIANO``
    for POP909's accompaniment track. Notes are paired by the file rule (:func:`lofi_live.midi.files.track_notes`:
    a re-strike replaces the pending note-on, as the shared grid conformance vectors expect).
    """
    notes: list[NoteEvent] = []
    for track in midi.tracks:
        if tracks is None or fnmatch.fnmatch(track.name.strip().lower(), tracks.lower()):
            notes += track_notes(track, midi.ticks_per_beat, "replace", skip_channel=DRUM_CHANNEL)
    notes.sort()
    return notes


def file_notes(path: str | os.PathLike, tracks: str | None = None) -> list[NoteEvent]:
    """:func:`midi_file_notes` of a file; bad files raise a one-line :class:`lofi_live.errors.LofiError`."""
    return midi_file_notes(read_midi(path), tracks)


def file_tokens(path: str | os.PathLike, tracks: str | None = None) -> list[str]:
    """Grid tokens of one MIDI file (of its tracks named like ``tracks``); bad files raise a one-line error."""
    return notes_to_tokens(file_notes(path, tracks))


def file_grid(path: str | os.PathLike, tracks: str | None = None) -> tuple[list[str], list[int]]:
    """:func:`file_tokens` with each token's position in its bar (:func:`notes_to_grid`)."""
    return notes_to_grid(file_notes(path, tracks))


def tokens_to_notes(tokens: Sequence[str], velocity: int = 80, start_step: int = 0) -> list[NoteEvent]:
    """The notes grid tokens describe: each onset sounds until the next onset or rest.

    A ``hold`` keeps the previous onset's notes sounding (a hold with nothing before it sounds
    nothing); chords are voiced by :func:`lofi_live.tokens.rules.token_pitches`.
    """
    notes: list[NoteEvent] = []
    current: list[int] = []
    began = 0

    def release(step: int) -> None:
        for pitch in current:
            notes.append(NoteEvent(began * STEP_BEATS, (step - began) * STEP_BEATS, pitch, velocity))
        current.clear()

    for offset, token in enumerate(tokens):
        step = start_step + offset
        if token == token_rules.HOLD:
            continue
        release(step)
        if token != token_rules.REST:
            current.extend(token_rules.token_pitches(token))
            began = step
    release(start_step + len(tokens))
    notes.sort()
    return notes


class GridGrammar:
    """Which grid tokens may come next in a continuation: the one grammar of ``generate`` and the live engine.

    * ``hold`` keeps sounding what the continuation plays, so it is allowed only while one of its notes
      sounds (not as its first token, whose file or response starts silent, nor after a rest);
    * a 9th rest in a row would be cut by the tokenizer, so at most :data:`MAX_RESTS` are allowed;
    * ``opens_with_onset`` (a live response: the pause before it was the player's, already in the window
      as rests): the first token is an onset, so a response never opens with more silence.

    The file written from tokens chosen so reads back to exactly those tokens.
    """

    def __init__(self, vocabulary: Sequence[str], opens_with_onset: bool = False):
        self.hold = np.array([t == token_rules.HOLD for t in vocabulary], dtype=bool)
        self.rest = np.array([t == token_rules.REST for t in vocabulary], dtype=bool)
        self.opening = opens_with_onset
        self.sounding = False
        self.rests = 0

    def allowed(self, base: np.ndarray | None = None) -> np.ndarray:
        """The tokens allowed now, within ``base`` (e.g. a key lock) when given."""
        mask = np.ones(len(self.hold), dtype=bool) if base is None else np.array(base, dtype=bool)
        if not self.sounding:
            mask &= ~self.hold
        if self.rests >= MAX_RESTS or self.opening:
            mask &= ~self.rest
        return mask

    def add(self, token: str) -> None:
        """Follow one chosen token."""
        self.opening = False
        if token == token_rules.REST:
            self.sounding, self.rests = False, self.rests + 1
        elif token != token_rules.HOLD:
            self.sounding, self.rests = True, 0
