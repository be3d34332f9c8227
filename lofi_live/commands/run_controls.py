"""``lofi-live run``'s MIDI controls: the config's ``[run]`` defaults and CC mapping, and ``--learn``."""

from __future__ import annotations

import argparse
import queue
from pathlib import Path

from lofi_live.errors import LofiError


def load_controls(args: argparse.Namespace):
    """The CC mapping from the controls config (``--config``, else the default location, if any)."""
    try:
        from lofi_live.live import controls
    except ImportError:  # pragma: no cover - controls ship with the package
        if args.config:
            raise LofiError("--config: MIDI control mapping is not available in this build") from None
        return None
    if args.learn and args.config and not Path(args.config).exists():
        config = controls.Config()  # --learn creates it
    else:
        config = controls.load_config(args.config)
    apply_run_defaults(args, config.run)
    args.model = args.model if isinstance(args.model, list) else [args.model]  # [run] model: a string or a list
    return _control_map(config, args)


def _control_map(config, args: argparse.Namespace):
    if not config.cc:
        return None
    return config.control_map(mode=args.mode, key_lock=args.key is not None, n_models=len(args.model))


def learn_controls(args: argparse.Namespace, inbox: queue.SimpleQueue):
    """``--learn``: ask for each action's CC on the controller, save them, return the new mapping.

    Every action is skipped after ``--learn-timeout`` seconds without a control change, so a run
    with no controller (or no one at it) ends the learning in at most 10 x that time, never hangs."""
    from lofi_live.live import controls

    path = Path(args.config) if args.config else controls.default_config_path()

    def receive(seconds: float):
        try:
            return inbox.get(timeout=seconds)
        except queue.Empty:
            return None

    print(f"lofi-live: learning MIDI controls for {path} (each skipped after {args.learn_timeout:g} s)", flush=True)
    mapping = controls.learn(receive, list(controls.ACTIONS), ask=lambda text: print(f"lofi-live: {text}", flush=True),
                             timeout=args.learn_timeout)
    if mapping:
        controls.save_config(path, cc=mapping)
        print(f"lofi-live: saved {len(mapping)} control(s) to {path}", flush=True)
    else:
        print("lofi-live: no control learned; the config file is unchanged", flush=True)
    return _control_map(controls.load_config(path), args) if path.exists() else None


#: Parser defaults of ``run``, so config ``[run]`` values only replace options not given.
PARSER_DEFAULTS: dict[str, object] = {}


def apply_run_defaults(args: argparse.Namespace, run_defaults: dict) -> None:
    for key, value in (run_defaults or {}).items():
        dest = {"in": "in_port", "out": "out_port"}.get(key, key)
        if not hasattr(args, dest) or dest not in PARSER_DEFAULTS or getattr(args, dest) != PARSER_DEFAULTS[dest]:
            continue
        if dest == "metronome" and isinstance(value, bool):
            value = 10 if value else None
        setattr(args, dest, value)
