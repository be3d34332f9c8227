"""Where a key is set in a TOML file, for the config's one-line errors (``FILE line N: 'run.bpm'``).

``tomllib`` gives the parsed values only, so the line is found by scanning the text: the key in its
``[table]``, a dotted ``table.key`` at the top level, or the key anywhere as a fallback.
"""

from __future__ import annotations

import re
from pathlib import Path


def key_line(text: str, table: str | None, key: str) -> int | None:
    """The 1-based line where ``key`` is set in ``[table]`` (top level when None), found by scanning."""
    current: str | None = None
    pattern = re.compile(r'^\s*(?:"%s"|\'%s\'|%s)\s*=' % (re.escape(key), re.escape(key), re.escape(key)))
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    fallback = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = header.match(line)
        if match:
            current = match.group(1).strip().strip('"\'')
            if table is None and current == key:
                return number
            continue
        if pattern.match(line):
            if current == table:
                return number
            fallback = fallback or number
        elif table is not None and current is None and re.match(r"^\s*%s\s*\.\s*%s\s*=" % (re.escape(table), re.escape(key)), line):
            return number
    return fallback


def where_in(path: Path, text: str, table: str | None, key: str) -> str:
    """``FILE line N: 'table.key'`` for an error message (without the line when it is not found)."""
    line = key_line(text, table, key)
    name = f"{table}.{key}" if table else key
    return f"{path} line {line}: '{name}'" if line else f"{path}: '{name}'"
