"""``lofi-live generate``: the seed's generate_notes/create_midi on ONNX Runtime, written to a ``.mid``.

A seed window (the last ``window`` tokens of ``--seed-midi``, unknown tokens mapped to the nearest known
one, or a random window of the model's own ``seed_windows``) primes the model; each next token is chosen
by :class:`lofi_live.sampling.Sampler` (argmax at ``--temperature 0``, as the seed did) and fed back through
the step graph. Only the generated tokens are written: one event per grid step (0.5 beat), a chord voiced
as a close chord from C3 up (:func:`lofi_live.tokens.token_pitches`), piano, the tempo in the file. Each
event lasts exactly one grid step, so no note crosses a barline and music21 reads the file back to the
same tokens.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lofi_live import tokens as token_rules
from lofi_live.errors import LofiError
from lofi_live.midifile import NoteEvent, write_midi
from lofi_live.sampling import (
    DEFAULT_MAX_REPEAT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    SCALES,
    Sampler,
    ScaleLock,
    detect_key,
    key_name,
    parse_key,
    parse_scale,
)

DEFAULT_STEPS = 500
DEFAULT_BPM = 90.0
VELOCITY = 80


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="exported model: NAME, NAME.json or NAME.onnx (default: exported_models/lofi or $LOFI_LIVE_MODEL)")
    parser.add_argument("--seed-midi", metavar="FILE", help="prime with the last window of tokens of this MIDI file (default: a random window of the model's data)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"tokens to generate (default {DEFAULT_STEPS})")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"0 = argmax like the seed; higher = more varied (default {DEFAULT_TEMPERATURE})")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"sample among the K likeliest tokens, 0 = all (default {DEFAULT_TOP_K})")
    parser.add_argument("--max-repeat", type=int, default=DEFAULT_MAX_REPEAT, help=f"never sample one token more than N times in a row, 0 = off (default {DEFAULT_MAX_REPEAT})")
    parser.add_argument("--seed", type=int, help="random seed, for a reproducible result")
    parser.add_argument("--bpm", type=float, default=DEFAULT_BPM, help=f"tempo written in the file (default {DEFAULT_BPM:g})")
    parser.add_argument("--key", help="lock to a key: C, C#, Db, ... B, or auto (detected from the seed window)")
    parser.add_argument("--scale", help=f"scale of --key: {', '.join(SCALES)} (default minor; auto detects major/minor)")
    parser.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"), help="ONNX Runtime provider (default auto)")
    parser.add_argument("-o", "--output", required=True, help="the .mid file to write")


def event_pitches(token: str) -> list[int]:
    """The MIDI pitches that sound one token, so that music21 reads them back as the same token.

    A chord token of a single pitch class (``"7"``, music21's name for a chord of octave doublings)
    is sounded as that pitch class in two octaves; otherwise :func:`token_pitches`.
    """
    pitches = token_rules.token_pitches(token)
    if token_rules.is_chord(token) and len(pitches) == 1:
        pitches.append(pitches[0] + 12)
    return pitches


def tokens_to_notes(tokens: Sequence[str], grid_beats: float = token_rules.GRID_BEATS, velocity: int = VELOCITY) -> list[NoteEvent]:
    """One event per grid step (the seed's ``offset += 0.5``), each lasting one step."""
    notes = []
    for step, token in enumerate(tokens):
        for pitch in event_pitches(token):
            notes.append(NoteEvent(step * grid_beats, grid_beats, pitch, velocity))
    return notes


def write_tokens_midi(path: str | Path, tokens: Sequence[str], bpm: float = DEFAULT_BPM, grid_beats: float = token_rules.GRID_BEATS) -> Path:
    """A one-track piano ``.mid`` of the tokens at ``bpm``."""
    return write_midi(path, [("lofi-live", tokens_to_notes(tokens, grid_beats))], bpm=bpm, program=0)


def generate_indices(model, seed: Sequence[int], steps: int, sampler: Sampler, allowed: np.ndarray | None = None) -> list[int]:
    """``steps`` token indices continuing ``seed``, through the model's stepper."""
    stepper = model.stepper()
    probs = stepper.reset(seed)
    chosen: list[int] = []
    for step in range(steps):
        token = sampler.choose(probs, allowed)
        chosen.append(token)
        if step + 1 < steps:
            probs = stepper.advance(token)
    return chosen


def seed_window(model, seed_midi: str | None, rng: np.random.Generator) -> tuple[list[int], str]:
    """The priming indices and a short description of where they came from."""
    if seed_midi:
        from lofi_live.midi_tokens import midi_file_tokens

        found = midi_file_tokens(seed_midi)
        indices = model.encode(found)
        if not indices:
            raise LofiError(f"{seed_midi}: no notes to start from")
        unknown = sum(1 for t in found[-model.window :] if t not in model.index)
        note = f", {unknown} mapped to the nearest known token" if unknown else ""
        return indices[-model.window :], f"last {min(len(indices), model.window)} tokens of {Path(seed_midi).name}{note}"
    if not model.seed_windows:
        raise LofiError(f"{model.path}: the model has no seed_windows; pass --seed-midi FILE")
    pick = int(rng.integers(len(model.seed_windows)))
    return list(model.seed_windows[pick]), f"seed window {pick} of the model"


def scale_lock(model, key: str | None, scale: str | None, seed_tokens: Sequence[str]) -> ScaleLock | None:
    if not key:
        if scale:
            raise LofiError("--scale needs --key (a key name or auto)")
        return None
    if key.strip().lower() == "auto":
        key_pc, detected = detect_key(seed_tokens)
        return ScaleLock(model.vocabulary, key_pc, parse_scale(scale) if scale else detected)
    return ScaleLock(model.vocabulary, parse_key(key), parse_scale(scale or "minor"))


def longest_run(items: Sequence) -> int:
    """The longest run of one item repeated back to back (issue 4's "no token more than 8 in a row")."""
    best = run = 0
    previous = object()
    for item in items:
        run = run + 1 if item == previous else 1
        previous = item
        best = max(best, run)
    return best


def run(args: argparse.Namespace) -> int:
    from lofi_live.model import Model

    if args.steps < 1:
        raise LofiError("--steps must be at least 1")
    if not 1 <= args.bpm <= 999:
        raise LofiError("--bpm must be between 1 and 999")
    output = Path(args.output)
    if output.is_dir():
        raise LofiError(f"{output}: is a folder; give a .mid file name")
    started = time.perf_counter()
    model = Model.load(args.model, provider=args.provider)
    sampler = Sampler(args.temperature, args.top_k or None, args.seed, args.max_repeat or None)
    seed, origin = seed_window(model, args.seed_midi, np.random.default_rng(args.seed))
    lock = scale_lock(model, args.key, args.scale, model.decode(seed))
    indices = generate_indices(model, seed, args.steps, sampler, lock.mask if lock else None)
    generated = model.decode(indices)
    write_tokens_midi(output, generated, bpm=args.bpm, grid_beats=model.grid_beats)
    elapsed = time.perf_counter() - started
    key = f", key {key_name(lock.key_pc, lock.scale)}" if lock else ""
    print(
        f"wrote {output}: {len(generated)} tokens ({len(set(generated))} distinct, longest run {longest_run(generated)}), "
        f"{len(generated) * model.grid_beats:g} beats at {args.bpm:g} BPM; model {model.name} on {model.provider}, "
        f"{origin}, temperature {args.temperature:g}, top-k {args.top_k or 'all'}{key}; {elapsed:.2f} s"
    )
    return 0
