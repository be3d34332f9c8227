"""``lofi-train merge``: a shard folder (``prepare --shard-files``) -> one corpus file."""

from __future__ import annotations

import argparse
from pathlib import Path

from lofi_live.errors import LofiError
from training.corpus.io import load_corpus, read_index, save_corpus


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", type=Path, metavar="SHARD_DIR", help="shard folder from lofi-train prepare --shard-files")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CORPUS",
                        help="corpus file to write (.json, or .json.gz for gzip)")


def run(args: argparse.Namespace) -> int:
    if not args.shards.is_dir():
        raise LofiError(f"{args.shards}: not a folder (merge joins the shards of a prepare --shard-files folder)")
    corpus = load_corpus(args.shards)
    save_corpus(corpus, args.output)
    print(f"{args.output}: {len(corpus['files'])} files, {sum(len(f['tokens']) for f in corpus['files'])} tokens "
          f"from {len(read_index(args.shards)['shards'])} shards, {len(corpus['failures'])} failed")
    return 0
