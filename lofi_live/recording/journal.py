"""The session journal (``docs/JOURNAL_FORMAT.md``): one line per event, appended and ``fsync``ed as a
session plays, so a crash loses nothing up to the last flush; read back (``--recover``: as far as it
is whole) into :class:`SessionData`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

from lofi_live.errors import LofiError
from lofi_live.files import checked_file

#: First word of a journal's header line.
MAGIC = "lofi-live-journal"
#: Version of the journal format written here; readers refuse newer ones (2 added ``gap`` and ``back``).
FORMAT_VERSION = 2
#: The two parts of a session, in track order; other part names get tracks after them.
PARTS = ("player", "model")
#: Journal record kinds that are not part names.
RESERVED = frozenset({"tempo", "mark", "end", "gap", "back"})
#: Record kinds that carry a text: what went away, what came back.
OUTAGE_KINDS = ("gap", "back")
#: Journals above this size are refused (a ten-hour flood would not reach it).
MAX_JOURNAL_BYTES = 512 * 1024 * 1024
#: Tempo changes smaller than this (BPM) are not written to the ``.mid`` (MIDI-clock jitter).
TEMPO_EPSILON = 0.01

_PART_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class Event(NamedTuple):
    """One journal record. ``kind`` is ``on``, ``off``, ``tempo``, ``mark``, ``end``, ``gap`` or ``back``."""

    beat: float
    kind: str
    part: str = ""
    pitch: int = 0
    velocity: int = 0
    channel: int = 0
    bpm: float = 0.0
    text: str = ""  # gap, back: what went away or came back


def format_event(event: Event) -> str:
    """The journal line of an event, newline included (floats in Python's shortest exact form)."""
    beat = repr(float(event.beat))
    if event.kind in ("on", "off"):
        return f"{beat} {event.part} {event.kind} {event.pitch} {event.velocity} {event.channel}\n"
    if event.kind == "tempo":
        return f"{beat} tempo {float(event.bpm)!r}\n"
    if event.kind in OUTAGE_KINDS:
        return f"{beat} {event.kind} {event.text}\n"
    return f"{beat} {event.kind}\n"


def format_header(bpm: float, started: datetime | None = None) -> str:
    stamp = (started or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{MAGIC} {FORMAT_VERSION} bpm={float(bpm)!r} started={stamp}\n"


def finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return number


def int_in(value: int, low: int, high: int, what: str) -> int:
    number = int(value)
    if number != value or not low <= number <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return number


def check_part(part: str) -> str:
    if not isinstance(part, str) or not _PART_RE.match(part) or part in RESERVED:
        raise ValueError(f"part must be a word like 'player' or 'model', not {part!r}")
    return part


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_bpm(bpm: float) -> float:
    value = finite(bpm, "bpm")
    if not 1.0 <= value <= 1000.0:
        raise ValueError(f"bpm must be in 1..1000, not {bpm!r}")
    return value


@dataclass
class SessionData:
    """What a journal (or a live session) holds: its header tempo and its events in order."""

    bpm: float
    events: list[Event] = field(default_factory=list)
    ended: bool = False
    skipped: list[int] = field(default_factory=list)  # 1-based numbers of lines skipped on read

    def last_beat(self) -> float:
        return max((event.beat for event in self.events), default=0.0)

    def end_beat(self) -> float:
        """The ``end`` record's beat when there is one, else the last journaled beat."""
        ends = [event.beat for event in self.events if event.kind == "end"]
        return ends[-1] if ends else self.last_beat()



def _parse_header(line: str) -> float:
    words = line.split()
    if len(words) < 2 or words[0] != MAGIC:
        raise ValueError("not a lofi-live session journal (no 'lofi-live-journal' header)")
    try:
        version = int(words[1])
    except ValueError:
        raise ValueError(f"bad journal format version {words[1]!r}") from None
    if version > FORMAT_VERSION or version < 1:
        raise ValueError(f"journal format version {version} is not supported (this lofi-live reads 1..{FORMAT_VERSION})")
    fields = dict(word.split("=", 1) for word in words[2:] if "=" in word)
    if "bpm" not in fields:
        raise ValueError("journal header has no bpm=")
    try:
        return check_bpm(float(fields["bpm"]))
    except ValueError:
        raise ValueError(f"journal header has a bad tempo bpm={fields['bpm']}") from None


def parse_event(line: str) -> Event:
    """One journal line (without its newline) -> :class:`Event`; ValueError when malformed."""
    words = line.split()
    if len(words) < 2:
        raise ValueError("too few fields")
    beat = finite(float(words[0]), "beat")
    kind = words[1]
    if kind == "tempo":
        if len(words) != 3:
            raise ValueError("a tempo line is: BEAT tempo BPM")
        return Event(beat, "tempo", bpm=check_bpm(float(words[2])))
    if kind in OUTAGE_KINDS:
        return Event(beat, kind, text=" ".join(words[2:]))
    if kind in ("mark", "end"):
        if len(words) != 2:
            raise ValueError(f"a {kind} line is: BEAT {kind}")
        return Event(beat, kind)
    if len(words) != 6 or words[2] not in ("on", "off"):
        raise ValueError("a note line is: BEAT PART on|off PITCH VELOCITY CHANNEL")
    part = check_part(kind)
    return Event(
        beat, words[2], part,
        int_in(int(words[3]), 0, 127, "pitch"),
        int_in(int(words[4]), 0, 127, "velocity"),
        int_in(int(words[5]), 0, 15, "channel"),
    )


def read_journal(path: str | os.PathLike, recover: bool = False) -> SessionData:
    """Read a journal; every problem with the file is a one-line :class:`LofiError` naming it.

    A last line without its newline (cut by a crash) is always skipped. With ``recover``, any
    other unreadable line (garbage after a power loss) is skipped too and listed in
    ``SessionData.skipped``; without it such a line is an error naming the line number.
    """
    file, _ = checked_file(path, "a session journal", MAX_JOURNAL_BYTES)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    if not raw:
        raise LofiError(f"{file}: empty file")
    if raw.startswith((b"MThd", b"RIFF")):
        raise LofiError(f"{file}: is a MIDI file, not a session journal (give FILE.mid.journal)")
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    header = lines[0]
    if not (header.startswith(MAGIC + " ") or (MAGIC + " ").startswith(header)):
        raise LofiError(f"{file}: not a lofi-live session journal (no '{MAGIC}' header)")
    if not header.endswith("\n"):
        raise LofiError(f"{file}: truncated journal header, nothing was recorded")
    try:
        bpm = _parse_header(header)
    except ValueError as error:
        raise LofiError(f"{file}: {error}") from None
    data = SessionData(bpm)
    for number, line in enumerate(lines[1:], start=2):
        if not line.endswith("\n"):
            data.skipped.append(number)  # the last line, cut short by a crash
            break
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            event = parse_event(stripped)
        except (ValueError, OverflowError) as error:
            if recover:
                data.skipped.append(number)
                continue
            raise LofiError(f"{file} line {number}: unreadable journal line ({error}); try --recover") from None
        data.events.append(event)
        if event.kind == "end":
            data.ended = True
    return data
