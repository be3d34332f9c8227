"""A ``fit`` run's options: new ones from the command line, a resumed run's kept (and what a resume may
not change), the data a resumed run must find unchanged, and where fine-tuning starts from.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lofi_live.errors import LofiError
from training.presets import SEQUENCE_PRESETS, compile_model, get_preset
from training.runs import best_checkpoint, load_model, load_run


def _run_of(source: Path) -> dict[str, Any]:
    """The run.json of a run folder, or of the run folder that holds a checkpoint file."""
    return load_run(source if source.is_dir() else source.parent)


def _vocabulary_of(source: Path) -> list[str]:
    return list(_run_of(source)["vocabulary"])


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


def resume_options(stored: dict[str, Any], args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Check a command against the run folder it resumes; returns the run's options it keeps (shown as flags).

    A resume trains on the run's own corpora with its own data and model options, so a command that names
    other corpora, or sets an option to another value than the run's, is refused with one line naming
    each difference. An option the command leaves at its default is the run's: those are returned, to be
    said. (``--epochs``, ``--batch-size`` and ``--epoch-windows`` are this command's and never compared.)
    ``parser``: ``fit``'s, for the options' defaults.
    """
    run_dir: Path = args.output
    had = stored["options"]
    corpora = stored.get("data", {}).get("corpora") or had["corpora"]
    if _comparable("corpora", [str(p) for p in args.corpora]) != _comparable("corpora", corpora):
        raise LofiError(f"{run_dir}: this run trains on {', '.join(had['corpora'])}, not "
                        f"{', '.join(str(p) for p in args.corpora)}: give its corpora to resume it, choose another "
                        f"-o, or fine-tune it on other data with --init-from {run_dir}")
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


def shared_vocabulary(vocab_from: Path | None, init_from: Path | None) -> list[str] | None:
    """The vocabulary imposed by ``--vocab-from`` and/or ``--init-from`` (they must agree), else None."""
    vocabulary = _vocabulary_of(vocab_from) if vocab_from else None
    if init_from:
        init_vocabulary = _vocabulary_of(init_from)
        if vocabulary is not None and vocabulary != init_vocabulary:
            raise LofiError(f"{init_from}: its vocabulary differs from that of --vocab-from {vocab_from}")
        vocabulary = init_vocabulary
    return vocabulary


def _base_preset(name: str) -> str:
    return name.removesuffix("-seq")


def fine_tuning_start(source: Path, preset: str, window: int) -> Any:
    """Another run's best checkpoint (or the given one), recompiled with a fresh optimizer.

    ``small`` and ``small-seq`` (and ``medium`` / ``medium-seq``) have the same weights, so either
    can start the other: the weights are copied into a freshly built model of the run's preset.
    """
    checkpoint = source if source.is_file() else best_checkpoint(source)
    source_run = load_run(checkpoint.parent)
    if _base_preset(source_run["preset"]) != _base_preset(preset) or source_run["window"] != window:
        raise LofiError(f"{checkpoint}: a {source_run['preset']} model with window {source_run['window']} cannot "
                        f"start a {preset} run with window {window} (use the same --preset and --window)")
    model = load_model(checkpoint)
    if source_run["preset"] != preset:
        rebuilt = get_preset(preset).build(len(source_run["vocabulary"]), window)
        rebuilt.set_weights(model.get_weights())
        return rebuilt
    compile_model(model, "seed" if preset == "seed" else "adam", sequence=preset in SEQUENCE_PRESETS)
    return model
