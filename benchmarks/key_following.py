"""Does the answer follow the key of what was played? The seed phrase in all 12 keys, no key lock.

A musician who plays a phrase in E minor expects the answer in E minor without telling the tool.
For each of the 12 transpositions of a seed phrase (default ``examples/seed_phrase.mid``) and each of
``--seeds`` sampler seeds, the model continues the phrase for ``--steps`` grid steps with the
default sampling settings and no ``--key``. The phrase's key is detected from its own tokens
(Krumhansl-Schmuckler, :func:`lofi_live.model.sampling.detect_key`); the figure is the share of the
answer's sounded pitch classes (each note of each onset counts once) inside that key's scale.
The target is at least 90 % in every key.

    python benchmarks/key_following.py [--model NAME] [--seed-midi FILE] [--steps 64] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lofi_live.tokens import rules as token_rules  # noqa: E402
from lofi_live.tokens.midi import file_tokens  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.commands.generate import generate_indices, make_sampler  # noqa: E402
from lofi_live.model.sampling import (  # noqa: E402
    DEFAULT_MAX_REPEAT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    detect_key,
    key_name,
    parse_key,
    parse_scale,
    scale_pitch_classes,
)

TARGET = 0.90


def answer(model: Model, seed_tokens: list[str], steps: int, seed: int, temperature: float, top_k: int | None) -> list[str]:
    """``steps`` tokens continuing ``seed_tokens`` as ``generate`` samples them (no key lock)."""
    sampler = make_sampler(model, temperature, top_k, seed, DEFAULT_MAX_REPEAT)
    return model.decode(generate_indices(model, model.encode(seed_tokens)[-model.window:], steps, sampler))


def in_key_share(tokens: list[str], allowed: set[int]) -> tuple[float, int]:
    """(share of sounded pitch classes inside ``allowed``, how many were sounded)."""
    sounded = [pc for token in tokens for pc in token_rules.token_pitch_classes(token)]
    if not sounded:
        return 1.0, 0
    return sum(pc in allowed for pc in sounded) / len(sounded), len(sounded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported model (default: the shipped default)")
    parser.add_argument("--seed-midi", default=str(ROOT / "examples" / "seed_phrase.mid"))
    parser.add_argument("--steps", type=int, default=64, help="grid steps of each answer (default 64 = 4 bars)")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per key (default 3)")
    parser.add_argument("--phrase-key", metavar="KEY:SCALE",
                        help="the untransposed phrase's key, e.g. C:minor for the example phrase "
                        "(default: detected from each transposed phrase)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="0 = all tokens")
    args = parser.parse_args()
    model = Model.load(args.model)
    phrase = file_tokens(args.seed_midi, model.tokens)
    print(f"model {model.name} ({model.tokens} tokens), phrase {Path(args.seed_midi).name}: {len(phrase)} tokens, "
          f"{args.steps} steps per answer, {args.seeds} seeds per key, temperature {args.temperature:g}, "
          f"top-k {args.top_k or 'all'}, no key lock")
    shares: list[float] = []
    for shift in range(-5, 7):
        moved = [token_rules.transpose_token(t, shift) for t in phrase]
        if any(t is None for t in moved):
            continue
        if args.phrase_key:
            name, _, scale = args.phrase_key.partition(":")
            key_pc, scale = (parse_key(name) + shift) % 12, parse_scale(scale or "minor")
        else:
            key_pc, scale = detect_key(moved)
        allowed = scale_pitch_classes(key_pc, scale)
        row = []
        for seed in range(args.seeds):
            share, count = in_key_share(answer(model, moved, args.steps, seed, args.temperature, args.top_k or None),
                                        allowed)
            row.append(share)
        shares += row
        print(f"  shift {shift:+d}: phrase key {key_name(key_pc, scale):9s} in key "
              + " ".join(f"{s:6.1%}" for s in row))
    worst, median = min(shares), statistics.median(shares)
    verdict = "meets" if worst >= TARGET else "misses"
    print(f"in-key share of the answers' pitch classes: median {median:.1%}, worst {worst:.1%}, "
          f"mean {statistics.fmean(shares):.1%} over {len(shares)} answers; {verdict} the {TARGET:.0%} target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
