"""Corpora on disk: the format (docs/CORPUS_FORMAT.md), one JSON file (gzip or not) or a folder of shards.

A corpus file is JSON, never pickle, and keeps file boundaries so windows never straddle two files. A
shard folder (``prepare --shard-files``, written by :mod:`training.corpus.shards`) is ``index.json`` plus
gzip JSON-lines shards; :func:`read_shard` streams one, :func:`load_corpus` reads either layout whole.
Every problem reading one is a one-line :class:`LofiError` naming the file.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

from lofi_live.errors import LofiError
from lofi_live.files import checked_file
from lofi_live.tokens import grid as grid_tokens
from lofi_live.tokens.rules import TOKENIZATIONS

CORPUS_FORMAT = 1
#: Names each tokenization; part of every cache entry (with the parser's version), so changing either
#: invalidates the cache.
SEED_RULES = (
    "music21 seed rules v1: instrument.partitionByInstrument(midi).parts[0].recurse() when it finds parts, "
    "else midi.flatten().notes; Note -> str(pitch); Chord -> '.'.join(normalOrder)"
)
RULES = {"seed": SEED_RULES, "grid": grid_tokens.RULES}
#: Corpus files (or their gzip content) above this size are refused: POP909 whole is about 10 MB.
MAX_CORPUS_BYTES = 1024 * 1024 * 1024
INDEX = "index.json"
SHARD_RE = re.compile(r"^shard-\d{5,}\.jsonl\.gz$")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.jsonl.gz"


def corpus_header(folder: Path, kind: str, tracks: str | None) -> dict[str, Any]:
    """The fields a corpus (one file, or a shard folder's index) holds besides its files and failures."""
    return {
        "format": CORPUS_FORMAT,
        "source": str(folder.resolve()),
        "tokens": kind,
        "rules": RULES[kind] + (f"; tracks named {tracks}" if tracks else ""),
    }


def save_corpus(corpus: dict[str, Any], path: Path) -> None:
    """Write the corpus as JSON (gzip when the name ends in ``.gz``), atomically."""
    body = {key: value for key, value in corpus.items() if key != "cached_files"}
    data = json.dumps(body, separators=(",", ":")).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        raise LofiError(f"{path}: cannot write corpus ({error.strerror or error})") from None


def gunzip(data: bytes, file: Path) -> bytes:
    """Decompress, refusing a gzip bomb that would expand past :data:`MAX_CORPUS_BYTES`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_CORPUS_BYTES + 1)
    if len(out) > MAX_CORPUS_BYTES:
        raise LofiError(f"{file}: expands to over {MAX_CORPUS_BYTES / 1e6:.0f} MB, too large for a corpus file")
    if not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")
    return out


def load_corpus(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a corpus file, or a shard folder (:mod:`training.corpus.shards`) whole; any problem is a
    one-line :class:`LofiError` naming the file."""
    if Path(path).is_dir():
        return load_shards(Path(path))
    file, size = checked_file(path, "a corpus file (make one with lofi-train prepare)", MAX_CORPUS_BYTES,
                              missing="no such corpus file")
    if size == 0:
        raise LofiError(f"{file}: empty file, not a corpus (make one with lofi-train prepare)")
    try:
        data = file.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gunzip(data, file)
        corpus = json.loads(data)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except RecursionError:
        raise LofiError(f"{file}: not a corpus file (JSON nested too deeply)") from None
    except (ValueError, EOFError, zlib.error) as error:
        raise LofiError(f"{file}: not a corpus file (invalid JSON or gzip: {str(error).splitlines()[0]})") from None
    return check_corpus(corpus, file)


def check_corpus(corpus: Any, file: Path) -> dict[str, Any]:
    """A parsed corpus checked field by field (files as path + token strings, at least one file)."""
    if (not isinstance(corpus, dict) or corpus.get("format") != CORPUS_FORMAT
            or not isinstance(corpus.get("files"), list)):
        raise LofiError(f"{file}: not a corpus file (expected a JSON object with format {CORPUS_FORMAT} and files)")
    for index, entry in enumerate(corpus["files"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("tokens"), list)
            or not all(isinstance(t, str) for t in entry["tokens"])
        ):
            raise LofiError(f"{file}: corrupt corpus (file entry {index} needs a path and a list of token strings)")
    if not corpus["files"]:
        raise LofiError(f"{file}: corpus holds no tokenized files")
    return corpus


def corpus_tokens(corpus: dict[str, Any]) -> str:
    """The tokenization a corpus was made with (corpora from before ``--tokens`` hold seed tokens)."""
    kind = corpus.get("tokens", "seed")
    if kind not in TOKENIZATIONS:
        raise LofiError(f"unknown tokenization {kind!r} in corpus {corpus.get('source', '')}")
    return kind


def read_index(folder: Path) -> dict[str, Any]:
    """A shard folder's ``index.json``, checked; a missing or broken one is a one-line error."""
    file = folder / INDEX
    try:
        index = json.loads(file.read_text())
    except FileNotFoundError:
        raise LofiError(f"{folder}: not a shard corpus (no {INDEX}; make one with lofi-train prepare --shard-files)") from None
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:
        raise LofiError(f"{file}: not a shard index (invalid JSON: {str(error).splitlines()[0]})") from None
    shards = index.get("shards") if isinstance(index, dict) else None
    if (not isinstance(index, dict) or index.get("layout") != "shards" or not isinstance(shards, list)
            or not all(isinstance(s, dict) and SHARD_RE.match(str(s.get("name", ""))) for s in shards)
            or not isinstance(index.get("failures"), list)):
        raise LofiError(f"{file}: not a shard index (expected layout shards, shards named shard-NNNNN.jsonl.gz "
                        "and failures)")
    return index


def read_shard(file: Path) -> Iterator[dict[str, Any]]:
    """The file entries of one shard, in order; an unreadable or corrupt shard is a one-line error."""
    try:
        data = gunzip(file.read_bytes(), file)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except (EOFError, ValueError) as error:
        raise LofiError(f"{file}: corrupt shard (gzip: {str(error).splitlines()[0]})") from None
    for number, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise LofiError(f"{file}: corrupt shard (line {number} is not JSON)") from None
        if (not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("tokens"), list) or not all(isinstance(t, str) for t in entry["tokens"])):
            raise LofiError(f"{file}: corrupt shard (line {number} needs a path and a list of token strings)")
        yield entry


def load_shards(folder: Path) -> dict[str, Any]:
    """A shard folder read whole into one corpus dictionary, as :func:`load_corpus` gives."""
    index = read_index(folder)
    files = [entry for shard in index["shards"] for entry in read_shard(folder / shard["name"])]
    corpus = {key: index[key] for key in ("format", "source", "tokens", "rules") if key in index}
    return check_corpus({**corpus, "files": files, "failures": index["failures"]}, folder)
