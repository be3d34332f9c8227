"""The data and model options of a ``fit`` run: what run.json stores, and how a resume is checked against them.

Split from :mod:`training.fit.loop`. A resume trains on the run's own corpora with its own options: a command
that sets one to another value is refused, one left at its default is kept and named.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lofi_live.errors import LofiError
from training.presets import SEQUENCE_PRESETS


def _run_of(source: Path) -> dict[str, Any]:
    from training.fit.loop import _run_of as run_of

    return run_of(source)


def new_options(args: argparse.Namespace) -> dict[str, Any]:
    """The data and model options of a new run, as stored in run.json (a resume reuses them)."""
    preset = args.preset or (_run_of(args.init_from)["preset"] if args.init_from else "small")
    return {
        "corpora": [str(p) for p in args.corpora],
        "preset": preset,
        "window": args.window,
        "stride": args.stride or default_stride(preset, args.window),
        "transpose": args.transpose,
        "oversample": args.oversample,
        "loop_short": args.loop_short,
        "loop_times": args.loop_times,
        "vary_loops": args.vary_loops,
        "vary_rounds": args.vary_rounds,
        "learning_rate": args.learning_rate,
        "val_fraction": args.val_fraction,
        "val_files": args.val_files,
        "seed": args.seed,
        "min_count": args.min_count,
        "vocab_corpora": [str(p) for p in args.vocab_corpus],
        "init_from": str(args.init_from) if args.init_from else None,
        "vocab_from": str(args.vocab_from) if args.vocab_from else None,
    }


def default_stride(preset: str, window: int) -> int:
    """1 (every window) for last-position presets; ``window // 2`` for sequence presets.

    A sequence preset learns from every position of a window, so windows half a window apart still
    make each token a target twice, once with at least half a window of context, at 1/(window/2)
    of the steps per epoch.
    """
    return max(1, window // 2) if preset in SEQUENCE_PRESETS else 1


#: run.json options that name files (compared as absolute paths)
_PATH_OPTIONS = frozenset({"corpora", "vocab_corpora", "init_from", "vocab_from"})


def _option_flag(key: str) -> tuple[str, str]:
    """A run.json option -> (the argparse destination, the ``fit`` flag) that sets it."""
    dest = "vocab_corpus" if key == "vocab_corpora" else key
    return dest, "--" + dest.replace("_", "-")


def _comparable(key: str, value: Any) -> Any:
    """An option's value as a resume compares it: paths absolute, one ``--val-files`` glob as a list."""
    if key in _PATH_OPTIONS and value is not None:
        return [str(Path(v).resolve()) for v in value] if isinstance(value, list) else str(Path(value).resolve())
    if key == "val_files" and isinstance(value, str):
        return [value]
    return value


def _shown(flag: str, value: Any) -> str:
    """An option as it reads on the command line: ``--transpose``, ``no --oversample``, ``--window 32``."""
    if value is True:
        return flag
    if value is False or value is None or value == []:
        return f"no {flag}"
    if isinstance(value, list):
        return " ".join(f"{flag} {v}" for v in value)
    return f"{flag} {value}"


def resume_options(stored: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Check a command against the run folder it resumes; returns the run's options it keeps (shown as flags).

    A resume trains on the run's own corpora with its own data and model options, so a command that names
    other corpora, or sets an option to another value than the run's, is refused with one line naming
    each difference. An option the command leaves at its default is the run's: those are returned, to be
    said. (``--epochs``, ``--batch-size`` and ``--epoch-windows`` are this command's and never compared.)
    """
    run_dir: Path = args.output
    had = stored["options"]
    corpora = stored.get("data", {}).get("corpora") or had["corpora"]
    if _comparable("corpora", [str(p) for p in args.corpora]) != _comparable("corpora", corpora):
        raise LofiError(f"{run_dir}: this run trains on {', '.join(had['corpora'])}, not "
                        f"{', '.join(str(p) for p in args.corpora)}: give its corpora to resume it, choose another "
                        f"-o, or fine-tune it on other data with --init-from {run_dir}")
    from training.fit.loop import configure  # the fit command's own parser gives the defaults

    parser = argparse.ArgumentParser()
    configure(parser)
    conflicts: list[str] = []
    kept: list[str] = []
    for key, value in new_options(args).items():
        if key == "corpora":
            continue
        dest, flag = _option_flag(key)
        default = parser.get_default(dest)
        before = had.get(key, default)
        if _comparable(key, value) == _comparable(key, before):
            continue
        if getattr(args, dest) != default:
            conflicts.append(f"{_shown(flag, value)} (the run has {_shown(flag, before)})")
        else:
            kept.append(_shown(flag, before))
    if conflicts:
        raise LofiError(f"{run_dir}: this command asks for {'; '.join(conflicts)}: a resume keeps the run's options, "
                        "so repeat them (or leave them out), or choose another -o for a new run")
    return kept


def check_same_data(stored: dict[str, Any], fields: dict[str, Any], run_dir: Path) -> None:
    """A resumed run's corpora still hold what they held when it began (same files and token counts)."""
    before, now = stored.get("data", {}), fields["data"]
    if any(key in before and before[key] != now[key] for key in ("files", "tokens")):
        raise LofiError(f"{run_dir}: its corpora changed since the run began ({before.get('files')} files and "
                        f"{before.get('tokens')} tokens then, {now['files']} and {now['tokens']} now): choose "
                        f"another -o for a new run, or fine-tune this one with --init-from {run_dir}")
