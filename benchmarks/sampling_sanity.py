"""Musical sanity of sampling settings: 500 steps from several seeds per setting, for any exported model.

    python benchmarks/sampling_sanity.py [--model exported_models/lofi] [--seeds 10] [--steps 500] [--json]
        [--setting T:K ...]   (temperature:top-k, K = 0 for all; default: argmax, a small grid and the defaults)

Seed ``i`` starts from the model's seed window ``i`` (cycling when it has fewer) and samples with random seed
``i``, exactly as ``lofi-live generate`` does (its sampler, repetition guard and, for grid models, grammar).

* Seed-token models (issue 4): distinct tokens, longest run of one token, and the share of pitch classes in
  the key detected on the generated tokens. Check: at least 20 distinct tokens and no run over 8, every seed.
* Grid models (issue 10, item 6), per seed and summarised: distinct note lengths (an onset and its holds,
  in steps), share of holds, longest run of one onset token (holds and rests between them skipped),
  distinct onset tokens, and the share of pitch classes in the key detected on the seed window; then the
  note-length histogram. Check, every seed: >= 3 lengths, >= 15 % holds, run <= 8, >= 12 onset tokens.
  Per-seed rows and the histogram are printed for the first setting given, else for the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lofi_live.tokens import rules as token_rules  # noqa: E402
from lofi_live.errors import LofiError  # noqa: E402
from lofi_live.commands.generate import generate_indices, longest_onset_run, longest_run, make_sampler  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.model.sampling import (  # noqa: E402
    DEFAULT_MAX_REPEAT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    detect_key,
    key_name,
    scale_pitch_classes,
)

#: Issue 10, item 6: what 500 grid steps from each seed must show.
GRID_CHECKS = {"lengths_min": 3, "hold_share_min": 0.15, "onset_run_max": 8, "onsets_min": 12}
#: Issue 4: what 500 seed-token steps from each seed must show.
SEED_CHECKS = {"distinct_min": 20, "run_max": 8}


def in_key_share(tokens: Sequence[str], key: tuple[int, str]) -> float:
    """Share of the tokens' pitch classes (a chord counts each of its own) inside ``key``."""
    allowed = scale_pitch_classes(*key)
    pcs = [pc for token in tokens for pc in token_rules.token_pitch_classes(token)]
    return sum(pc in allowed for pc in pcs) / max(1, len(pcs))


def note_lengths(tokens: Sequence[str]) -> list[int]:
    """The length in steps of every onset: itself and the holds after it."""
    lengths: list[int] = []
    for token in tokens:
        if token == token_rules.HOLD:
            if lengths:
                lengths[-1] += 1
        elif token != token_rules.REST:
            lengths.append(1)
    return lengths


def seed_row(tokens: Sequence[str]) -> dict:
    return {"distinct": len(set(tokens)), "longest_run": longest_run(tokens),
            "in_key": round(in_key_share(tokens, detect_key(tokens)), 3)}


def grid_row(tokens: Sequence[str], seed_tokens: Sequence[str]) -> dict:
    onsets = [t for t in tokens if not token_rules.is_rhythm(t)]
    key = detect_key(seed_tokens)
    return {
        "lengths": sorted(set(note_lengths(tokens))),
        "hold_share": round(tokens.count(token_rules.HOLD) / len(tokens), 3),
        "rest_share": round(tokens.count(token_rules.REST) / len(tokens), 3),
        "longest_onset_run": longest_onset_run(tokens),
        "distinct_onsets": len(set(onsets)),
        "seed_key": key_name(*key),
        "in_seed_key": round(in_key_share(onsets, key), 3),
    }


def grid_passes(row: dict) -> bool:
    return (len(row["lengths"]) >= GRID_CHECKS["lengths_min"] and row["hold_share"] >= GRID_CHECKS["hold_share_min"]
            and row["longest_onset_run"] <= GRID_CHECKS["onset_run_max"] and row["distinct_onsets"] >= GRID_CHECKS["onsets_min"])


def spread_window(model: Model, seed: int, seeds: int) -> list[int]:
    """Seed ``seed`` of ``seeds`` primes with a seed window spread evenly over the model's seed windows.

    The seed windows are cut evenly from the training files in name order, so neighbouring windows come
    from the same few loops; spreading the picks gives ``seeds`` different kinds of phrase.
    """
    if not model.seed_windows:
        return list(range(model.window))
    return list(model.seed_windows[seed * len(model.seed_windows) // seeds])


def evaluate_setting(model: Model, temperature: float, top_k: int | None, seeds: int, steps: int = 500) -> dict:
    """One setting over ``seeds`` seeds: per-seed rows, a summary and (grid) the note-length histogram."""
    rows, histogram = [], Counter()
    for seed in range(seeds):
        window = spread_window(model, seed, seeds)
        sampler = make_sampler(model, temperature, top_k, seed, DEFAULT_MAX_REPEAT)
        tokens = model.decode(generate_indices(model, window, steps, sampler))
        if model.tokens == "grid":
            rows.append({"seed": seed, **grid_row(tokens, model.decode(window))})
            histogram.update(note_lengths(tokens))
        else:
            rows.append({"seed": seed, **seed_row(tokens)})
    result = {"temperature": temperature, "top_k": top_k, "rows": rows}
    if model.tokens == "grid":
        result.update({
            "lengths_min": min(len(r["lengths"]) for r in rows),
            "hold_share_min": min(r["hold_share"] for r in rows),
            "hold_share_mean": round(float(np.mean([r["hold_share"] for r in rows])), 3),
            "onset_run_max": max(r["longest_onset_run"] for r in rows),
            "onsets_min": min(r["distinct_onsets"] for r in rows),
            "in_seed_key_mean": round(float(np.mean([r["in_seed_key"] for r in rows])), 3),
            "length_histogram": {str(k): histogram[k] for k in sorted(histogram)},
            "passes": all(grid_passes(r) for r in rows),
        })
    else:
        result.update({
            "distinct_min": min(r["distinct"] for r in rows),
            "distinct_mean": float(np.mean([r["distinct"] for r in rows])),
            "longest_run_max": max(r["longest_run"] for r in rows),
            "in_key_mean": float(np.mean([r["in_key"] for r in rows])),
            "passes": all(r["distinct"] >= SEED_CHECKS["distinct_min"] and r["longest_run"] <= SEED_CHECKS["run_max"] for r in rows),
        })
    return result


def _setting(text: str) -> tuple[float, int | None]:
    try:
        temperature, top_k = text.split(":")
        return float(temperature), int(top_k) or None
    except ValueError:
        raise LofiError(f"--setting {text!r}: expected TEMPERATURE:TOP_K, e.g. 1.0:24") from None


def print_seed_model(model: Model, results: list[dict], seeds: int, steps: int) -> None:
    print(f"model {model.name} (seed tokens): {steps} steps x {seeds} seeds (max_repeat guard on except at T=0)")
    print("  T     top-k  distinct(min/mean)  longest run  in key  issue-4 check")
    for r in results:
        print(f"  {r['temperature']:<5g} {str(r['top_k'] or 'all'):<6} {r['distinct_min']:>4} / {r['distinct_mean']:<10.1f} "
              f"{r['longest_run_max']:>6}       {r['in_key_mean']:.2f}    {'ok' if r['passes'] else 'FAIL'}")


def print_grid_model(model: Model, results: list[dict], seeds: int, steps: int, detail: dict) -> None:
    print(f"model {model.name} (grid tokens): {steps} steps x {seeds} seeds; want >= {GRID_CHECKS['lengths_min']} note "
          f"lengths, >= {GRID_CHECKS['hold_share_min']:.0%} holds, onset runs <= {GRID_CHECKS['onset_run_max']}, "
          f">= {GRID_CHECKS['onsets_min']} onset tokens, every seed")
    print("  T     top-k  lengths(min)  holds(min/mean)  onset run(max)  onsets(min)  in seed key  issue-10 check")
    for r in results:
        print(f"  {r['temperature']:<5g} {str(r['top_k'] or 'all'):<6} {r['lengths_min']:>8}      "
              f"{r['hold_share_min']:>5.0%} / {r['hold_share_mean']:<5.0%}   {r['onset_run_max']:>8}        "
              f"{r['onsets_min']:>6}       {r['in_seed_key_mean']:>5.0%}       {'ok' if r['passes'] else 'FAIL'}")
    print(f"\nper seed at T {detail['temperature']:g}, top-k {detail['top_k'] or 'all'}:")
    print("  seed  lengths (steps)       holds  rests  onset run  onsets  seed key          in key  check")
    for r in detail["rows"]:
        lengths = ",".join(map(str, r["lengths"]))
        print(f"  {r['seed']:>4}  {lengths[:20]:<20}  {r['hold_share']:>5.0%}  {r['rest_share']:>5.0%}  "
              f"{r['longest_onset_run']:>9}  {r['distinct_onsets']:>6}  {r['seed_key']:<16}  {r['in_seed_key']:>5.0%}  "
              f"{'ok' if grid_passes(r) else 'FAIL'}")
    total = sum(detail["length_histogram"].values()) or 1
    print("\nnote lengths (steps of 0.5 beat), all seeds:")
    for length, count in detail["length_histogram"].items():
        print(f"  {length:>3}  {count:>5}  {'#' * max(1, round(50 * count / total)) if count else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported model (default: exported_models/lofi or $LOFI_LIVE_MODEL)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    parser.add_argument("--steps", type=int, default=500, help="steps per seed (default 500)")
    parser.add_argument("--setting", action="append", default=[], metavar="T:K")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        if args.seeds < 1 or args.steps < 1:
            raise LofiError("--seeds and --steps must be at least 1")
        settings = [_setting(s) for s in args.setting] or [
            (0.0, None), (0.8, 5), (0.9, 8), (DEFAULT_TEMPERATURE, DEFAULT_TOP_K or None), (1.0, None), (1.2, 12)]
        model = Model.load(args.model, provider="cpu")
    except LofiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = [evaluate_setting(model, t, k, args.seeds, args.steps) for t, k in settings]
    if args.json:
        print(json.dumps({"model": model.name, "tokens": model.tokens, "steps": args.steps, "results": results}))
    elif model.tokens == "grid":
        detail = results[0] if args.setting else results[settings.index((DEFAULT_TEMPERATURE, DEFAULT_TOP_K or None))]
        print_grid_model(model, results, args.seeds, args.steps, detail)
    else:
        print_seed_model(model, results, args.seeds, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
