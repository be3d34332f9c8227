"""Does a continuation follow the loop it heard? Held-out loops, played twice, continued with `generate`'s defaults.

A producer plays a loop and wants it carried on: the same changes and groove, with variations worth keeping.
For each loop of the held-out TEST creators (the files matching ``--files``, default the 10 "MLP" and 9
"LofiPianoSample" loops of ``../shared/data/lofi``, which no shipped model trained or picked checkpoints on),
cut to its first ``--bars`` bars (2 and 4; a file shorter than the cut is left out of it), the loop is written to
a real ``.mid`` played twice, read back as ``lofi-live generate --seed-midi`` reads a clip, and continued for
``--steps`` steps (8 bars) with ``generate``'s defaults, over ``--seeds`` sampler seeds. Per generated note or
onset, against the loop at the same point of its cycle (the continuation starts on the bar after the clip,
so step ``k`` is at ``k mod loop length``):

* ``chord_fit``: generated notes whose pitch class sounds in the loop at that point of its cycle, beside
  ``chance``: the same for a pitch class drawn from the loop's own notes (each note counts once);
* ``scale_fit``: generated notes inside the scale of the loop's key (Krumhansl-Schmuckler over its tokens);
* ``onset_alignment``: the Jaccard of the onset positions mod the loop, generated against the loop's;
* ``novelty``: generated onset steps whose pitch-class set differs from the loop's onset there.

Targets with the defaults: chord_fit >= 0.85, onset_alignment >= 0.6, novelty 0.15-0.6. The table over
``--variation`` (and the network alone: ``--follow off``; for a model with a copy gate also its own
``--variation`` without the loop rule) shows what each setting changes.

    python benchmarks/loop_fit.py [--model NAME] [--data ../shared/data/lofi] [--seeds 3] [--json]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lofi_live.commands import generate  # noqa: E402
from lofi_live.midi.files import write_midi  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.model.sampling import detect_key, scale_pitch_classes  # noqa: E402
from lofi_live.tokens import grid, loops  # noqa: E402
from lofi_live.tokens import rules as token_rules  # noqa: E402

TEST_FILES = ("*MLP*", "LofiPianoSample*")
TARGETS = {"chord_fit": (0.85, None), "onset_alignment": (0.6, None), "novelty": (0.15, 0.6)}
#: The rows of the table: (label, extra generate options); the first is the defaults.
VARIATIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
SETTINGS = [("defaults", []), ("network alone (--follow off)", ["--follow", "off"])] + [
    (f"--variation {v:g}", ["--variation", f"{v:g}"]) for v in VARIATIONS]
#: For a model with a copy gate: its own --variation, without the loop rule.
GATE_SETTINGS = [(f"network alone, --variation {v:g}", ["--follow", "off", "--variation", f"{v:g}"]) for v in VARIATIONS]


class Loop:
    """A held-out loop cut to whole bars: its notes, length in steps, and what sounds at each step of its cycle."""

    def __init__(self, name: str, notes: list, bars: int):
        self.name, self.bars, self.notes = name, bars, notes
        self.steps = bars * loops.STEPS_PER_BAR
        self.sounding = loops.cycle_pitch_classes(notes, self.steps)
        self.onsets: dict[int, set[int]] = {}
        for note in notes:
            self.onsets.setdefault(grid.onset_step(note.start) % self.steps, set()).add(note.pitch % 12)
        self.pitch_classes = [note.pitch % 12 for note in notes]
        key, scale = detect_key(grid.notes_to_tokens(notes))
        self.scale = scale_pitch_classes(key, scale)

    def write_twice(self, folder: Path) -> Path:
        """The loop played twice, as a real .mid clip of exactly two loops."""
        path = folder / f"{self.name}-{self.bars}.mid"
        return write_midi(path, [("loop", loops.loop_notes(self.notes, self.steps))], bpm=90,
                          end_beats=2 * self.steps * grid.STEP_BEATS)

    def measure(self, tokens: list[str]) -> dict[str, float]:
        """The figures of one continuation (tokens from the bar after the clip)."""
        notes = grid.tokens_to_notes(tokens)
        steps = [grid.onset_step(note.start) % self.steps for note in notes]
        fit = [note.pitch % 12 in self.sounding[step] for note, step in zip(notes, steps)]
        chance = [np.mean([pc in self.sounding[step] for pc in self.pitch_classes]) for step in steps]
        onsets: dict[int, set[int]] = {}
        for k, token in enumerate(tokens):
            if not token_rules.is_rhythm(token):
                onsets[k] = token_rules.token_pitch_classes(token)
        played = {k % self.steps for k in onsets}
        novel = [pcs != self.onsets.get(k % self.steps, set()) for k, pcs in onsets.items()]
        return {"chord_fit": float(np.mean(fit)) if fit else 0.0, "chance": float(np.mean(chance)) if chance else 0.0,
                "scale_fit": float(np.mean([n.pitch % 12 in self.scale for n in notes])) if notes else 0.0,
                "onset_alignment": len(played & set(self.onsets)) / max(len(played | set(self.onsets)), 1),
                "novelty": float(np.mean(novel)) if novel else 0.0, "notes": len(notes)}


def held_out_loops(data: Path, patterns: list[str], lengths: list[int]) -> list[Loop]:
    """Every test file cut to each length (files shorter than a length are left out of it)."""
    found = []
    for path in sorted(data.iterdir(), key=lambda p: p.name):
        if path.suffix.lower() not in (".mid", ".midi") or not any(fnmatch.fnmatch(path.name, p) for p in patterns):
            continue
        notes = grid.file_notes(path)
        for bars in lengths:
            if loops.loop_steps(notes) >= bars * loops.STEPS_PER_BAR:
                cut = loops.cut_loop(notes, bars)
                if cut:
                    found.append(Loop(path.stem, cut, bars))
    return found


def continue_loop(model: Model, clip: Path, options: list[str], steps: int, seed: int) -> list[str]:
    """``lofi-live generate --seed-midi CLIP --steps N --seed S OPTIONS``'s tokens, through its own functions."""
    parser = argparse.ArgumentParser()
    generate.configure(parser)
    args = parser.parse_args(["--seed-midi", str(clip), "--steps", str(steps), "--seed", str(seed), "-o", "-", *options])
    context = generate.seed_context(model, str(clip), np.random.default_rng(seed))
    return generate._continue(model, args, context, steps, None, seed)


def run_setting(model: Model, found: list[Loop], clips: dict, options: list[str], steps: int, seeds: int) -> dict:
    """Mean figures per loop length and over all, for one setting."""
    rows: dict[int, list[dict]] = {}
    for loop in found:
        for seed in range(seeds):
            tokens = continue_loop(model, clips[loop], options, steps, seed)
            rows.setdefault(loop.bars, []).append(loop.measure(tokens))
    keys = ("chord_fit", "chance", "scale_fit", "onset_alignment", "novelty")
    summary = {f"{bars} bars": {k: statistics.fmean(r[k] for r in runs) for k in keys} | {"runs": len(runs)}
               for bars, runs in sorted(rows.items())}
    everything = [r for runs in rows.values() for r in runs]
    summary["all"] = {k: statistics.fmean(r[k] for r in everything) for k in keys} | {"runs": len(everything)}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="exported model (default: the shipped default)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lofi"), help="folder of the loops")
    parser.add_argument("--files", action="append", help=f"glob of the test files (default {' '.join(TEST_FILES)})")
    parser.add_argument("--bars", type=int, action="append", help="loop lengths in bars (default 2 and 4)")
    parser.add_argument("--steps", type=int, default=64, help="steps of each continuation (default 64 = 8 bars)")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per loop (default 3)")
    parser.add_argument("--defaults-only", action="store_true", help="only the defaults, no table over --variation")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"loop_fit: {data}: no such folder (the shared LoFi data)", file=sys.stderr)
        return 2
    model = Model.load(args.model, provider="cpu")
    found = held_out_loops(data, args.files or list(TEST_FILES), args.bars or [2, 4])
    if not found:
        print(f"loop_fit: no test loops matching {args.files or TEST_FILES} in {data}", file=sys.stderr)
        return 2
    settings = SETTINGS[:1] if args.defaults_only else SETTINGS + (GATE_SETTINGS if getattr(model, "has_copy_gate", False) else [])
    with tempfile.TemporaryDirectory() as folder:
        clips = {loop: loop.write_twice(Path(folder)) for loop in found}
        results = {label: run_setting(model, found, clips, options, args.steps, args.seeds) for label, options in settings}
    files = len({loop.name for loop in found})
    report = {"model": model.name, "files": files, "loops": {f"{b} bars": sum(l.bars == b for l in found) for b in sorted({l.bars for l in found})},
              "seeds": args.seeds, "steps": args.steps, "results": results}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {model.name}: {files} held-out files, loops {report['loops']}, each played twice, "
          f"continued {args.steps} steps, {args.seeds} seeds")
    print(f"{'setting':44} {'loop':>7} {'chord_fit':>9} {'chance':>7} {'scale_fit':>9} {'onset_al':>8} {'novelty':>8}")
    for label, summary in results.items():
        for part, row in summary.items():
            print(f"{label:44} {part:>7} {row['chord_fit']:9.3f} {row['chance']:7.3f} {row['scale_fit']:9.3f} "
                  f"{row['onset_alignment']:8.3f} {row['novelty']:8.3f}")
    defaults = results["defaults"]["all"]
    met = [f"{key} {defaults[key]:.3f} {'meets' if (low is None or defaults[key] >= low) and (high is None or defaults[key] <= high) else 'MISSES'}"
           f" {'>= ' + str(low) if high is None else f'{low}-{high}'}" for key, (low, high) in TARGETS.items()]
    print("targets with the defaults: " + "; ".join(met))
    return 0


if __name__ == "__main__":
    sys.exit(main())
