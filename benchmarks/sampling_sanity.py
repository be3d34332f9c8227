"""Musical sanity of sampling settings (issue 4, item 4): 500 steps from several seeds per setting.

    python benchmarks/sampling_sanity.py [--model exported_models/lofi] [--seeds 10] [--json]
        [--setting T:K ...]   (temperature:top-k, K = 0 for all; default: argmax and a small grid)

For each setting and seed it generates 500 tokens from a different seed window of the model and reports
the number of distinct tokens, the longest run of one token, and the share of pitch classes inside the
key detected (Krumhansl-Schmuckler) on the generated tokens. The defaults in lofi_live/sampling.py must
give at least 20 distinct tokens and no run longer than 8 for every seed (issue 4's check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lofi_live import tokens as token_rules  # noqa: E402
from lofi_live.generate import generate_indices, longest_run  # noqa: E402
from lofi_live.model import Model  # noqa: E402
from lofi_live.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, Sampler, detect_key, scale_pitch_classes  # noqa: E402


def in_key_share(tokens: list[str]) -> float:
    key, scale = detect_key(tokens)
    allowed = scale_pitch_classes(key, scale)
    pcs = [pc for token in tokens for pc in token_rules.token_pitch_classes(token)]
    return sum(pc in allowed for pc in pcs) / max(1, len(pcs))


def evaluate_setting(model: Model, temperature: float, top_k: int | None, seeds: int, max_repeat: bool = True) -> dict:
    rows = []
    for seed in range(seeds):
        window = model.seed_windows[seed % len(model.seed_windows)] if model.seed_windows else list(range(model.window))
        sampler = Sampler(temperature, top_k, seed) if max_repeat else Sampler(temperature, top_k, seed, max_repeat=None)
        tokens = model.decode(generate_indices(model, window, 500, sampler))
        rows.append({"distinct": len(set(tokens)), "longest_run": longest_run(tokens), "in_key": round(in_key_share(tokens), 3)})
    return {
        "temperature": temperature, "top_k": top_k,
        "distinct_min": min(r["distinct"] for r in rows), "distinct_mean": float(np.mean([r["distinct"] for r in rows])),
        "longest_run_max": max(r["longest_run"] for r in rows), "in_key_mean": float(np.mean([r["in_key"] for r in rows])),
        "passes": all(r["distinct"] >= 20 and r["longest_run"] <= 8 for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--setting", action="append", default=[], metavar="T:K")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = Model.load(args.model, provider="cpu")
    settings = [tuple(s.split(":")) for s in args.setting] or [
        ("0", "0"), ("0.8", "5"), ("0.9", "8"), (str(DEFAULT_TEMPERATURE), str(DEFAULT_TOP_K or 0)), ("1.0", "0"), ("1.2", "12"),
    ]
    results = [evaluate_setting(model, float(t), int(k) or None, args.seeds) for t, k in settings]
    if args.json:
        print(json.dumps({"model": model.name, "results": results}))
    else:
        print(f"model {model.name}: 500 steps x {args.seeds} seeds (max_repeat guard on except at T=0)")
        print("  T     top-k  distinct(min/mean)  longest run  in key  issue-4 check")
        for r in results:
            print(f"  {r['temperature']:<5g} {str(r['top_k'] or 'all'):<6} {r['distinct_min']:>4} / {r['distinct_mean']:<10.1f} "
                  f"{r['longest_run_max']:>6}       {r['in_key_mean']:.2f}    {'ok' if r['passes'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
