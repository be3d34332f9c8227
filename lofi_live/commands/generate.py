"""``lofi-live generate``: the seed's generate_notes/create_midi on ONNX Runtime, written to a ``.mid``.

A seed window (the last ``window`` tokens of ``--seed-midi``, unknown tokens mapped to the nearest known
one, or a random window of the model's own ``seed_windows``) primes the model; each next token is chosen
by :class:`lofi_live.model.sampling.Sampler` (argmax at ``--temperature 0``, as the seed did) and fed back through
the step graph, with each token's place in the 4/4 bar for a model that reads it. The generated tokens are
written, piano, the tempo in the file, in a track named ``model``, in the model's tokenization (``Model.tokens``):

* ``seed``: one event per grid step (0.5 beat), each lasting exactly one step, so no note crosses a barline
  and music21 reads the file back to the same tokens;
* ``grid``: the durations the tokens describe (:func:`lofi_live.tokens.grid.tokens_to_notes`): an onset
  sounds through its holds until the next onset or rest. The choices stay within :class:`GridGrammar`
  (no hold with nothing sounding, at most 8 rests in a row), so the file reads back to the same grid
  tokens (trailing rests aside, which the tokenizer drops). The repetition guard counts onsets only.

A seed clip is read to its END (:func:`lofi_live.tokens.loops.clip_tokens`, docs/CORPUS_FORMAT.md "Seed
clips"): the end of its longest track, trailing silence included, rounded up to the whole 4/4 bar. The
continuation starts on the bar line after it, and the ``.mid`` puts it there (``--with-seed`` writes the clip
before it as the track ``player (seed)``), so the file lines up with the clip in a DAW.

Continuing a clip, a grid model's choices follow the loop heard in it (``--follow chord``, the default:
:class:`lofi_live.model.loop_follow.LoopFollower`): ``--variation`` weighs the network against replaying the
loop (0 replays it), and the network's share keeps to the loop's groove and to the pitch classes sounding in
it at that point of its cycle. A model with a copy gate copies the loop itself: ``--variation`` goes to its
gate (0 copies only, 0.5 is the gate's own choice, 1 the vocabulary only) and the rule only keeps its choices
to the loop's groove and chords. ``--follow off`` leaves every step to the network.

Chords are voiced by :func:`lofi_live.tokens.rules.token_pitches` only. The notes then sound as live
(:mod:`lofi_live.timing.groove`): ``--swing PCT`` puts every off-beat eighth PCT % of the way through its beat
(to the tick: 66 is the triplet, 320 of 480 ticks), the velocity is the median of the seed clip's last
phrase (``--velocity`` sets it), accented on the beat, and ``--humanize`` varies velocities and onsets,
seeded by ``--seed``. A straight file reads back to the same tokens; a swung one once un-swung.

``--variations N`` (the way Magenta Studio's Continue works in a DAW) writes ``DIR/CLIP-1.mid ...
CLIP-N.mid``: N continuations of ``--seed-midi CLIP.mid``, each ``--bars`` long at the clip's tempo,
variation ``i`` sampled with seed ``--seed + i - 1`` so each one can be made again alone.
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens import loops
from lofi_live.tokens.grid import GridGrammar
from lofi_live.tokens.loops import TimedTokens
from lofi_live.tokens import rules as token_rules
from lofi_live.tokens.notes import longest_run, tokens_to_notes
from lofi_live.errors import LofiError
from lofi_live.timing.groove import DEFAULT_VELOCITY, HUMANIZE_MS, HUMANIZE_VELOCITY, Dynamics, Groove, Humanize, Swing
from lofi_live.midi.files import NoteEvent, first_tempo_bpm, read_midi, write_midi
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.model.loop_follow import DEFAULT_FOLLOW, DEFAULT_VARIATION, FOLLOW_CHOICES, LoopFollower, parse_variation
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

#: Track names: the continuation is the model's; ``--with-seed`` writes the clip as the player's.
MODEL_TRACK = "model"
SEED_TRACK = "player (seed)"
DEFAULT_STEPS = 500
DEFAULT_BPM = 90.0
#: Beats per bar: clips and ``--bars`` are counted in 4/4 bars.
BAR_BEATS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--seed-midi", metavar="FILE", help="prime with the last window of tokens of this MIDI file, read to its end rounded up to the bar; the continuation starts on the next bar line (default: a random window of the model's data)")
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
    parser.add_argument("--variation", type=parse_variation, metavar="0..1", default=DEFAULT_VARIATION,
                        help=f"how far a continuation of --seed-midi strays from the loop it heard: 0 replays it, 1 leaves "
                             f"each step to the network (default {DEFAULT_VARIATION:g}); a model with a copy gate takes it "
                             "itself (0.5 = its gate's own choice)")
    parser.add_argument("--follow", choices=FOLLOW_CHOICES, default=DEFAULT_FOLLOW,
                        help="grid models continuing --seed-midi: 'chord' replays the loop heard in the clip and keeps "
                             "the network's variations on its groove and within the pitch classes sounding in it at "
                             f"that point of its cycle; 'off' leaves every step to the network (default {DEFAULT_FOLLOW})")
    parser.add_argument("--with-seed", action="store_true",
                        help=f"write the --seed-midi clip first, as its own track '{SEED_TRACK}', before the continuation")
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
    start_beats: float = 0.0,
    seed_notes: Sequence[NoteEvent] | None = None,
) -> Path:
    """A piano ``.mid`` of the tokens at ``bpm``, in a track named ``model``, starting ``start_beats`` into the
    file (the bar line after a seed clip), played with ``groove`` (swing, dynamics, humanize) when given, else
    straight at the fixed velocity. ``seed_notes``: the clip, written first as its own track ``player (seed)``.
    ``end_beats``: the file's length (see write_midi)."""
    notes = [replace(note, start=note.start + start_beats) for note in tokens_to_notes(tokens, kind, grid_beats)]
    if groove is not None:
        notes = groove.notes(notes, bpm)
    tracks = [(SEED_TRACK, list(seed_notes))] if seed_notes is not None else []
    return write_midi(path, tracks + [(MODEL_TRACK, notes)], bpm=bpm, program=0, end_beats=end_beats)


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


def generate_indices(model, seed: Sequence[int], steps: int, sampler: Sampler, allowed: np.ndarray | None = None,
                     positions: Sequence[int] | None = None, follower: LoopFollower | None = None,
                     variation: float | None = None) -> list[int]:
    """``steps`` token indices continuing ``seed``, through the model's stepper (a grid model's within :class:`GridGrammar`).

    ``positions``: the seed tokens' places in the bar, read by a model with a position input; the continuation
    goes on from the last one. ``follower``: a :class:`LoopFollower` that has heard the loop, shaping each
    choice. ``variation``: the copy gate of a model that has one (None: the network's own gate).
    """
    stepper = model.stepper()
    with_positions = getattr(model, "uses_position", False)
    first = (positions[-1] + 1) % grid_tokens.STEPS_PER_BAR if positions else 0
    ahead = grid_tokens.bar_positions(steps, first)
    if getattr(model, "has_copy_gate", False):
        stepper.variation = variation
    if with_positions:
        seed_positions = list(positions) if positions else grid_tokens.bar_positions(len(seed), -len(seed) % grid_tokens.STEPS_PER_BAR)
        probs = stepper.reset(seed, positions=seed_positions[-len(seed) :])
    else:
        probs = stepper.reset(seed)
    grammar = GridGrammar(model.vocabulary) if model.tokens == "grid" else None
    chosen: list[int] = []
    for step in range(steps):
        mask = allowed if grammar is None else grammar.allowed(allowed)
        if follower is not None:
            probs, mask = follower.shape(probs, mask)
        token = sampler.choose(probs, mask)
        chosen.append(token)
        if follower is not None:
            follower.add(token)
        if grammar is not None:
            grammar.add(model.vocabulary[token])
        if step + 1 < steps:
            probs = stepper.advance(token, position=ahead[step]) if with_positions else stepper.advance(token)
    return chosen


def make_sampler(model, temperature: float, top_k: int | None, seed: int | None, max_repeat: int | None,
                 legato: float = DEFAULT_LEGATO) -> Sampler:
    """A sampler that follows the model's vocabulary: its repetition guard counts only onsets, and for a
    grid model ``legato`` holds the model's notes instead of some of the rests that would cut them."""
    sampler = Sampler(temperature, top_k, seed, max_repeat, legato=legato if model.tokens == "grid" else 0.0)
    sampler.follow(model.vocabulary)
    return sampler


@dataclass(frozen=True)
class Seed:
    """What primes the model: the window's token indices and bar positions, every heard token (the loop a
    :class:`LoopFollower` follows), where the continuation starts in the file (beats) and where they came from."""

    window: list[int]
    positions: list[int]
    heard: list[int]
    start_beats: float
    origin: str


def clip_tokens(path: str | Path, kind: str) -> TimedTokens:
    """A seed clip's tokens under a tokenization, with their steps.

    Grid: :func:`lofi_live.tokens.loops.clip_tokens`, the clip read to its end rounded up to the bar, the
    rests before that bar line included. Seed tokens carry no time: their steps are left empty.
    """
    if kind == "grid":
        return loops.clip_tokens(path)
    from lofi_live.tokens.midi import file_tokens

    return TimedTokens(file_tokens(path, kind), [], loops.clip_end_step(path))


def seed_context(model, seed_midi: str | None, rng: np.random.Generator) -> Seed:
    """The priming window (the last ``window`` tokens of the clip, or a random seed window of the model)."""
    if seed_midi:
        clip = clip_tokens(seed_midi, model.tokens)
        found = clip.tokens
        if not any(not token_rules.is_rhythm(t) for t in found):
            drums = " (drums on channel 10 are left out)" if model.tokens == "grid" else ""
            raise LofiError(f"{seed_midi}: no notes to continue{drums}")
        indices = model.encode(found)
        unknown = sum(1 for t in found[-model.window :] if t not in model.index)
        note = f", {unknown} mapped to the nearest known token" if unknown else ""
        origin = f"last {min(len(indices), model.window)} {model.tokens} tokens of {Path(seed_midi).name}{note}"
        positions = clip.positions or grid_tokens.bar_positions(len(indices), -len(indices) % grid_tokens.STEPS_PER_BAR)
        start = clip.end_step * grid_tokens.STEP_BEATS
        return Seed(indices[-model.window :], positions[-model.window :], indices, start, origin)
    if not model.seed_windows:
        raise LofiError(f"{model.path}: the model has no seed_windows; pass --seed-midi FILE")
    pick = int(rng.integers(len(model.seed_windows)))
    window = list(model.seed_windows[pick])
    # a seed window carries no time: it is read as ending on a bar line, so the continuation starts on one
    positions = grid_tokens.bar_positions(len(window), -len(window) % grid_tokens.STEPS_PER_BAR)
    return Seed(window, positions, window, 0.0, f"seed window {pick} of the model")


def seed_window(model, seed_midi: str | None, rng: np.random.Generator) -> tuple[list[int], str]:
    """The priming indices and a short description of where they came from."""
    seed = seed_context(model, seed_midi, rng)
    return seed.window, seed.origin


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


def make_follower(model, args: argparse.Namespace, seed: Seed) -> LoopFollower | None:
    """The loop rule of ``--follow`` and ``--variation`` for a grid model continuing a clip (else None)."""
    if model.tokens != "grid" or not args.seed_midi or args.follow == "off":
        return None
    # a network with a copy gate copies the loop itself: the rule then only keeps it to the loop's chords and groove
    follower = LoopFollower(model.vocabulary, args.variation, legato=args.legato,
                            replay=not getattr(model, "has_copy_gate", False))
    follower.hear(seed.heard)
    return follower


def _continue(model, args: argparse.Namespace, seed: Seed, steps: int, lock: ScaleLock | None, number_seed: int | None
              ) -> list[str]:
    """One continuation's tokens with the sampler, loop rule and variation the options ask for (with a loop rule,
    legato applies to the network's share only, see LoopFollower)."""
    follower = make_follower(model, args, seed)
    sampler = make_sampler(model, args.temperature, args.top_k or None, number_seed, args.max_repeat or None,
                           0.0 if follower else args.legato)
    return model.decode(generate_indices(model, seed.window, steps, sampler, lock.mask if lock else None,
                                         seed.positions, follower, args.variation))


def run(args: argparse.Namespace) -> int:
    from lofi_live.model.loader import Model

    output = Path(args.output)
    _check_output(args, output)
    if args.bpm is not None and not 1 <= args.bpm <= 999:
        raise LofiError("--bpm must be between 1 and 999")
    if args.max_repeat < 0:
        raise LofiError(f"--max-repeat must be 0 or more, not {args.max_repeat}")
    if args.with_seed and not args.seed_midi:
        raise LofiError("--with-seed needs --seed-midi CLIP.mid, the clip to write before the continuation")
    _check_groove(args)
    bpm = args.bpm or (first_tempo_bpm(read_midi(args.seed_midi), DEFAULT_BPM) if args.seed_midi else DEFAULT_BPM)
    started = time.perf_counter()
    model = Model.load(args.model, provider=args.provider)
    steps = _steps(args, model.grid_beats)
    seed = seed_context(model, args.seed_midi, np.random.default_rng(args.seed))
    lock = scale_lock(model, args.key, args.scale, model.decode(seed.window))
    end_beats = seed.start_beats + steps * model.grid_beats if args.bars is not None else None
    clip = grid_tokens.file_notes(args.seed_midi) if args.with_seed else None
    key = f", key {key_name(lock.key_pc, lock.scale)}" if lock else ""
    swing = f", swing {args.swing:g}" if args.swing != 50 else ""
    follow = make_follower(model, args, seed)
    loop = (f", following a loop of {follow.period} steps (variation {follow.variation:g})"
            if follow and follow.active else "")
    settings = f"temperature {args.temperature:g}, top-k {args.top_k or 'all'}{key}{swing}{loop}"
    where = f", from beat {seed.start_beats:g} (the bar after the clip)" if args.seed_midi else ""
    if args.variations is None:
        generated = _continue(model, args, seed, steps, lock, args.seed)
        write_tokens_midi(output, generated, bpm, model.grid_beats, model.tokens, end_beats, make_groove(args, args.seed),
                          seed.start_beats, clip)
        print(f"wrote {output}: {describe(generated, model.tokens)}, {steps * model.grid_beats:g} beats at {bpm:g} BPM"
              f"{where}; model {model.name} on {model.provider}, {seed.origin}, {settings}; "
              f"{time.perf_counter() - started:.2f} s")
        return 0
    base = args.seed if args.seed is not None else secrets.randbelow(2**31)
    stem = Path(args.seed_midi).stem
    output.mkdir(parents=True, exist_ok=True)
    for number in range(1, args.variations + 1):
        generated = _continue(model, args, seed, steps, lock, base + number - 1)
        path = write_tokens_midi(output / f"{stem}-{number}.mid", generated, bpm, model.grid_beats, model.tokens, end_beats,
                                 make_groove(args, base + number - 1), seed.start_beats, clip)
        print(f"wrote {path}: {describe(generated, model.tokens)}, seed {base + number - 1}")
    bars = steps * model.grid_beats / BAR_BEATS
    print(f"{args.variations} variations of {Path(args.seed_midi).name}, {bars:g} bars each at {bpm:g} BPM{where} "
          f"(--seed {base} makes them again); model {model.name} on {model.provider}, {seed.origin}, {settings}; "
          f"{time.perf_counter() - started:.2f} s")
    return 0
