"""``lofi-live generate``: the seed's generate_notes/create_midi on ONNX Runtime, written to a ``.mid``.

A seed window (the last ``window`` tokens of ``--seed-midi``, unknown tokens mapped to the nearest known
one, or a random window of the model's own ``seed_windows``) primes the model; each next token is chosen
by :class:`lofi_live.model.sampling.Sampler` (argmax at ``--temperature 0``, as the seed did) and fed back through
the step graph. Only the generated tokens are written, piano, the tempo in the file, in the model's
tokenization (``Model.tokens``):

* ``seed``: one event per grid step (0.5 beat), each lasting exactly one step, so no note crosses a barline
  and music21 reads the file back to the same tokens;
* ``grid``: the durations the tokens describe (:func:`lofi_live.tokens.grid.tokens_to_notes`): an onset
  sounds through its holds until the next onset or rest. The choices stay within :class:`GridGrammar`
  (no hold with nothing sounding, at most 8 rests in a row), so the file reads back to the same grid
  tokens (trailing rests aside, which the tokenizer drops). The repetition guard counts onsets only.

Chords are voiced by :func:`lofi_live.tokens.rules.token_pitches` only. The notes then sound as live
(:mod:`lofi_live.timing.groove`): ``--swing PCT`` puts every off-beat eighth PCT % of the way through its beat
(to the tick: 66 is the triplet, 320 of 480 ticks), the velocity is the median of the seed clip's last
phrase (``--velocity`` sets it), accented on the beat, and ``--humanize`` varies velocities and onsets,
seeded by ``--seed``. A straight file reads back to the same tokens; a swung one once un-swung. A seed clip is read under the model's
tokenization (:func:`lofi_live.tokens.midi.file_tokens`); for a grid model the silence from its last note
to its last bar line becomes rests, so the continuation starts where the clip ends.

``--variations N`` (the way Magenta Studio's Continue works in a DAW) writes ``DIR/CLIP-1.mid ...
CLIP-N.mid``: N continuations of ``--seed-midi CLIP.mid``, each ``--bars`` long at the clip's tempo,
variation ``i`` sampled with seed ``--seed + i - 1`` so each one can be made again alone.
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens.grid import GridGrammar
from lofi_live.tokens import rules as token_rules
from lofi_live.tokens.notes import longest_run, tokens_to_notes
from lofi_live.errors import LofiError
from lofi_live.timing.groove import DEFAULT_VELOCITY, HUMANIZE_MS, HUMANIZE_VELOCITY, Dynamics, Groove, Humanize, Swing
from lofi_live.midi.files import first_tempo_bpm, read_midi, write_midi
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.model.sampling import (
    DEFAULT_LEGATO,
    DEFAULT_MAX_REPEAT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    LEGATO_HELP,
    MIN_TEMPERATURE,
    SCALES,
    Sampler,
    ScaleLock,
    key_lock,
    key_name,
    legato_share,
)

DEFAULT_STEPS = 500
DEFAULT_BPM = 90.0
#: Beats per bar: clips and ``--bars`` are counted in 4/4 bars.
BAR_BEATS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--seed-midi", metavar="FILE", help="prime with the last window of tokens of this MIDI file, continuing from its end (default: a random window of the model's data)")
    parser.add_argument("--steps", type=int, help=f"tokens (0.5-beat steps) to generate (default {DEFAULT_STEPS})")
    parser.add_argument("--bars", type=int, help=f"length in 4/4 bars instead of --steps ({int(BAR_BEATS / token_rules.GRID_BEATS)} steps a bar)")
    parser.add_argument("--variations", type=int, metavar="N", help="write N continuations of --seed-midi CLIP.mid into the folder -o DIR, as CLIP-1.mid ... CLIP-N.mid")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"0 = argmax like the seed; higher = more varied (default {DEFAULT_TEMPERATURE})")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"sample among the K likeliest tokens, 0 = all (default {DEFAULT_TOP_K})")
    parser.add_argument("--legato", type=legato_share, default=DEFAULT_LEGATO, help=LEGATO_HELP)
    parser.add_argument("--max-repeat", type=int, default=DEFAULT_MAX_REPEAT, help=f"never sample one note or chord more than N times in a row (holds and rests of a grid model are free), 0 = off (default {DEFAULT_MAX_REPEAT})")
    parser.add_argument("--seed", type=int, help="random seed, for a reproducible result (variation i uses SEED + i - 1)")
    parser.add_argument("--swing", type=float, default=50.0, metavar="PCT", help="off-beat eighths lie PCT %% of the way through their beat, as on an MPC: 50 = straight (default), 66 = triplet feel, up to 75")
    parser.add_argument("--velocity", type=int, help=f"velocity of the notes, 1-127 (default: the median of the seed clip's last phrase, else {DEFAULT_VELOCITY}); notes on the beat get a light accent")
    parser.add_argument("--humanize", action="store_true", help=f"vary velocities (up to {HUMANIZE_VELOCITY}) and onsets (up to {HUMANIZE_MS:g} ms, never into another step), seeded by --seed")
    parser.add_argument("--bpm", type=float, help=f"tempo written in the file (default: the tempo of --seed-midi, else {DEFAULT_BPM:g})")
    parser.add_argument("--key", help="lock to a key: C, C#, Db, ... B, or auto (detected from the seed window)")
    parser.add_argument("--scale", help=f"scale of --key: {', '.join(SCALES)} (default minor; auto detects major/minor)")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS, help="ONNX Runtime provider (default auto)")
    parser.add_argument("-o", "--output", required=True, help="the .mid file to write (with --variations: the folder)")


def write_tokens_midi(
    path: str | Path,
    tokens: Sequence[str],
    bpm: float = DEFAULT_BPM,
    grid_beats: float = token_rules.GRID_BEATS,
    kind: str = "seed",
    end_beats: float | None = None,
    groove: Groove | None = None,
) -> Path:
    """A one-track piano ``.mid`` of the tokens at ``bpm`` (``end_beats``: the clip's length, see write_midi),
    played with ``groove`` (swing, dynamics, humanize) when given, else straight at the fixed velocity."""
    notes = tokens_to_notes(tokens, kind, grid_beats)
    if groove is not None:
        notes = groove.notes(notes, bpm)
    return write_midi(path, [("lofi-live", notes)], bpm=bpm, program=0, end_beats=end_beats)


def make_groove(args: argparse.Namespace, seed: int | None) -> Groove:
    """How the notes sound: ``--swing``, the seed clip's dynamics (or ``--velocity``), ``--humanize``
    seeded with ``seed``."""
    humanize = Humanize(args.humanize, seed)
    dynamics = Dynamics(args.velocity, humanize)
    if args.seed_midi:  # the clip is what was just played: its last phrase sets the level
        for note in grid_tokens.file_notes(args.seed_midi):
            dynamics.played(note.velocity, new_phrase=False)
    return Groove(Swing(args.swing), dynamics, humanize)


def _check_groove(args: argparse.Namespace) -> None:
    """Refuse a swing or a velocity out of range, in one line."""
    try:
        Swing(args.swing)
    except ValueError as error:
        raise LofiError(str(error)) from None
    if args.velocity is not None and not 1 <= args.velocity <= 127:
        raise LofiError(f"--velocity {args.velocity}: must be in 1..127")


def generate_indices(model, seed: Sequence[int], steps: int, sampler: Sampler, allowed: np.ndarray | None = None) -> list[int]:
    """``steps`` token indices continuing ``seed``, through the model's stepper (a grid model's within :class:`GridGrammar`)."""
    stepper = model.stepper()
    probs = stepper.reset(seed)
    grammar = GridGrammar(model.vocabulary) if model.tokens == "grid" else None
    chosen: list[int] = []
    for step in range(steps):
        token = sampler.choose(probs, allowed if grammar is None else grammar.allowed(allowed))
        chosen.append(token)
        if grammar is not None:
            grammar.add(model.vocabulary[token])
        if step + 1 < steps:
            probs = stepper.advance(token)
    return chosen


def make_sampler(model, temperature: float, top_k: int | None, seed: int | None, max_repeat: int | None,
                 legato: float = DEFAULT_LEGATO) -> Sampler:
    """A sampler that follows the model's vocabulary: its repetition guard counts only onsets, and for a
    grid model ``legato`` holds the model's notes instead of some of the rests that would cut them."""
    sampler = Sampler(temperature, top_k, seed, max_repeat, legato=legato if model.tokens == "grid" else 0.0)
    sampler.follow(model.vocabulary)
    return sampler


def clip_end_rests(path: str | Path, tokens: Sequence[str]) -> int:
    """Rests from a clip's last sounding grid step to its end, at most :data:`grid_tokens.MAX_RESTS`.

    The grid drops trailing rests, but a clip ends on a bar line (the end of its longest track rounded up
    to a 4/4 bar): the silence before it is part of the groove the continuation follows. After the last
    onset, a clip's tokens are holds only, so its last sounding step is the last onset's step plus them.
    """
    midi = read_midi(path)
    notes = grid_tokens.midi_file_notes(midi)
    if not notes or not tokens:
        return 0
    last_onset = max(i for i, t in enumerate(tokens) if not token_rules.is_rhythm(t))
    last_step = max(grid_tokens.onset_step(n.start) for n in notes) + len(tokens) - 1 - last_onset
    bar_ticks = BAR_BEATS * midi.ticks_per_beat
    end_ticks = max(sum(message.time for message in track) for track in midi.tracks)
    end_step = -(-end_ticks // bar_ticks) * int(BAR_BEATS / grid_tokens.STEP_BEATS)
    return max(0, min(grid_tokens.MAX_RESTS, end_step - last_step - 1))


def clip_tokens(path: str | Path, kind: str) -> list[str]:
    """A seed clip's tokens under a tokenization, for a grid model with the rests up to its last bar line."""
    from lofi_live.tokens.midi import file_tokens

    found = file_tokens(path, kind)
    if kind == "grid":
        found += [token_rules.REST] * clip_end_rests(path, found)
    return found


def seed_window(model, seed_midi: str | None, rng: np.random.Generator) -> tuple[list[int], str]:
    """The priming indices and a short description of where they came from."""
    if seed_midi:
        found = clip_tokens(seed_midi, model.tokens)
        if not any(not token_rules.is_rhythm(t) for t in found):
            drums = " (drums on channel 10 are left out)" if model.tokens == "grid" else ""
            raise LofiError(f"{seed_midi}: no notes to continue{drums}")
        indices = model.encode(found)
        unknown = sum(1 for t in found[-model.window :] if t not in model.index)
        note = f", {unknown} mapped to the nearest known token" if unknown else ""
        return indices[-model.window :], f"last {min(len(indices), model.window)} {model.tokens} tokens of {Path(seed_midi).name}{note}"
    if not model.seed_windows:
        raise LofiError(f"{model.path}: the model has no seed_windows; pass --seed-midi FILE")
    pick = int(rng.integers(len(model.seed_windows)))
    return list(model.seed_windows[pick]), f"seed window {pick} of the model"


def scale_lock(model, key: str | None, scale: str | None, seed_tokens: Sequence[str]) -> ScaleLock | None:
    """``--key``/``--scale`` (``auto``: detected from the seed window), by the engine's rule (:func:`key_lock`)."""
    if not key and scale:
        raise LofiError("--scale needs --key (a key name or auto)")
    return key_lock(model.vocabulary, key, scale, seed_tokens)


def longest_onset_run(tokens: Sequence[str]) -> int:
    """The longest run of one note or chord struck again and again, holds and rests between them skipped."""
    return longest_run([t for t in tokens if not token_rules.is_rhythm(t)])


def describe(tokens: Sequence[str], kind: str) -> str:
    """A short account of generated tokens for the summary line."""
    if kind != "grid":
        return f"{len(tokens)} tokens ({len(set(tokens))} distinct, longest run {longest_run(tokens)})"
    onsets = [t for t in tokens if not token_rules.is_rhythm(t)]
    holds = sum(t == token_rules.HOLD for t in tokens)
    rests = sum(t == token_rules.REST for t in tokens)
    return (f"{len(tokens)} grid tokens ({len(onsets)} onsets of {len(set(onsets))} distinct, {holds} holds, {rests} rests, "
            f"longest onset run {longest_onset_run(tokens)})")


def _steps(args: argparse.Namespace, grid_beats: float) -> int:
    """How many tokens to generate: ``--bars`` in 4/4 bars, else ``--steps`` (default 500)."""
    if args.bars is not None and args.steps is not None:
        raise LofiError("give --bars or --steps, not both")
    if args.bars is not None:
        if args.bars < 1:
            raise LofiError(f"--bars must be at least 1, not {args.bars}")
        return round(args.bars * BAR_BEATS / grid_beats)
    steps = DEFAULT_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise LofiError(f"--steps must be at least 1, not {steps}")
    return steps


def _check_output(args: argparse.Namespace, output: Path) -> None:
    """Refuse an output path or a ``--variations`` request that cannot work, before the model is loaded."""
    if args.variations is None:
        if output.is_dir():
            raise LofiError(f"{output}: is a folder; give a .mid file name (or --variations N to write into it)")
        return
    if args.variations < 1:
        raise LofiError(f"--variations must be at least 1, not {args.variations}")
    if not args.seed_midi:
        raise LofiError("--variations needs --seed-midi CLIP.mid, the clip to continue")
    if args.variations > 1 and args.temperature < MIN_TEMPERATURE:
        raise LofiError(f"--variations {args.variations} at --temperature 0 would write {args.variations} identical files; "
                        "use a temperature above 0")
    if output.exists() and not output.is_dir():
        raise LofiError(f"{output}: is a file; --variations writes CLIP-1.mid ... into a folder")


def run(args: argparse.Namespace) -> int:
    from lofi_live.model.loader import Model

    output = Path(args.output)
    _check_output(args, output)
    if args.bpm is not None and not 1 <= args.bpm <= 999:
        raise LofiError("--bpm must be between 1 and 999")
    if args.max_repeat < 0:
        raise LofiError(f"--max-repeat must be 0 or more, not {args.max_repeat}")
    _check_groove(args)
    bpm = args.bpm or (first_tempo_bpm(read_midi(args.seed_midi), DEFAULT_BPM) if args.seed_midi else DEFAULT_BPM)
    started = time.perf_counter()
    model = Model.load(args.model, provider=args.provider)
    steps = _steps(args, model.grid_beats)
    seed, origin = seed_window(model, args.seed_midi, np.random.default_rng(args.seed))
    lock = scale_lock(model, args.key, args.scale, model.decode(seed))
    end_beats = steps * model.grid_beats if args.bars is not None else None
    key = f", key {key_name(lock.key_pc, lock.scale)}" if lock else ""
    swing = f", swing {args.swing:g}" if args.swing != 50 else ""
    settings = f"temperature {args.temperature:g}, top-k {args.top_k or 'all'}{key}{swing}"
    if args.variations is None:
        sampler = make_sampler(model, args.temperature, args.top_k or None, args.seed, args.max_repeat or None,
                               args.legato)
        generated = model.decode(generate_indices(model, seed, steps, sampler, lock.mask if lock else None))
        write_tokens_midi(output, generated, bpm, model.grid_beats, model.tokens, end_beats, make_groove(args, args.seed))
        print(f"wrote {output}: {describe(generated, model.tokens)}, {steps * model.grid_beats:g} beats at {bpm:g} BPM; "
              f"model {model.name} on {model.provider}, {origin}, {settings}; {time.perf_counter() - started:.2f} s")
        return 0
    base = args.seed if args.seed is not None else secrets.randbelow(2**31)
    stem = Path(args.seed_midi).stem
    output.mkdir(parents=True, exist_ok=True)
    for number in range(1, args.variations + 1):
        sampler = make_sampler(model, args.temperature, args.top_k or None, base + number - 1, args.max_repeat or None,
                               args.legato)
        generated = model.decode(generate_indices(model, seed, steps, sampler, lock.mask if lock else None))
        path = write_tokens_midi(output / f"{stem}-{number}.mid", generated, bpm, model.grid_beats, model.tokens, end_beats,
                                 make_groove(args, base + number - 1))
        print(f"wrote {path}: {describe(generated, model.tokens)}, seed {base + number - 1}")
    bars = steps * model.grid_beats / BAR_BEATS
    print(f"{args.variations} variations of {Path(args.seed_midi).name}, {bars:g} bars each at {bpm:g} BPM "
          f"(--seed {base} makes them again); model {model.name} on {model.provider}, {origin}, {settings}; "
          f"{time.perf_counter() - started:.2f} s")
    return 0
