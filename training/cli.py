"""The ``lofi-train`` command: argument parsing and dispatch to the training modules.

The exact command line is handed to the command as ``args.command_line`` (``fit`` records it in run.json).
"""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from lofi_live.cli import build_parser, dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("training.corpus.prepare", "tokenize every MIDI file below a folder into a corpus file"),
    "merge": ("training.corpus.merge", "join the shards of a prepare --shard-files folder into one corpus file"),
    "fit": ("training.fit.loop", "train a Keras LSTM on a corpus, with checkpoints and curves"),
    "export": ("training.export", "export a trained run to ONNX with its vocabulary and metadata"),
    "sweep": ("training.sweep", "generate a continuation from every checkpoint of a run"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("lofi-train", COMMANDS, "Train LoFi continuation models on MIDI files.", argv)
    words = sys.argv[1:] if argv is None else list(argv)
    parser.set_defaults(command_line=shlex.join(["lofi-train", *words]))
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
