"""The ``lofi-live`` command: argument parsing and dispatch, nothing more.

Each sub-command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``lofi-live ports`` never loads ONNX Runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from lofi_live import __version__
from lofi_live.errors import LofiError

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("lofi_live.commands.run", "play live: listen on a MIDI port and continue what is played"),
    "ports": ("lofi_live.midi.ports", "list the MIDI ports of the chosen backend"),
    "generate": ("lofi_live.commands.generate", "generate a continuation offline and write a .mid"),
    "evaluate": ("lofi_live.commands.evaluate", "measure a model's next-token accuracy on a MIDI folder"),
    "bench": ("lofi_live.commands.bench", "benchmark per-step latency, memory and start-up time"),
    "export": ("lofi_live.commands.export", "convert a saved session or journal to a .mid"),
    "plot": ("lofi_live.commands.plot", "draw a session .mid as a piano roll PNG"),
}


def build_parser(
    prog: str, commands: dict[str, tuple[str, str]], description: str, argv: Sequence[str] | None = None
) -> argparse.ArgumentParser:
    """A parser with one sub-command per entry of ``commands``.

    Only the chosen command's module is imported, so a light command starts fast and a
    missing optional dependency (TensorFlow, matplotlib) only concerns its own command.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in words if not a.startswith("-")), None)
    for name, (module, help_text) in commands.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Run the chosen sub-command; user errors become one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LofiError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("lofi-live", COMMANDS, "Real-time LoFi MIDI continuation.", argv)
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
