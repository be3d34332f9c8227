"""The one check every command makes before it reads a file the user named.

A missing path, a folder, a FIFO or device (reading one blocks for ever), an unreadable file or one
far larger than any real input becomes a one-line :class:`LofiError` naming the file; the caller
then checks the content (MIDI header, JSON, journal lines) with its own messages.
"""

from __future__ import annotations

import os
from pathlib import Path

from lofi_live.errors import LofiError


def checked_file(path: str | os.PathLike, what: str, max_bytes: int, missing: str = "no such file") -> tuple[Path, int]:
    """``(path, size in bytes)`` of a readable regular file of at most ``max_bytes``.

    ``what`` names the expected kind with its article ("a MIDI file"); ``missing`` is the message
    for a path that does not exist (a hint on how to make one, say).
    """
    file = Path(path)
    if not file.exists():
        raise LofiError(f"{file}: {missing}")
    if file.is_dir():
        raise LofiError(f"{file}: is a folder, not {what}")
    if not file.is_file():
        raise LofiError(f"{file}: not a regular file (a pipe or device?), not {what}")
    try:
        size = file.stat().st_size
        if not os.access(file, os.R_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    if size > max_bytes:
        raise LofiError(f"{file}: {size / 1e6:.0f} MB is too large for {what}")
    return file, size
