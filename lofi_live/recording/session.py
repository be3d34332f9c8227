"""Recording a live session: the crash-safe journal and the two-track ``.mid`` (``lofi-live export``: :mod:`lofi_live.commands.export`).

The engine thread records notes and tempo changes; the main thread flushes and closes::

    session = Session(bpm=90, record=Path("jam.mid"))      # journal: jam.mid.journal
    session.note_on(0.0, "player", 60, 100)
    session.note_off(0.45, "player", 60)
    session.flush()                                         # at least once a beat
    session.close(end_beat=16.0)                            # writes jam.mid

Every event is appended to the journal (format: ``docs/JOURNAL_FORMAT.md``) and kept in memory.
:meth:`Session.flush` writes the pending lines with one ``write`` and ``fsync``s them, so a
``kill -9`` or a power loss loses nothing up to the last flush; ``lofi-live export --recover``
rebuilds the notes from what is there. Journal and ``.mid`` are reduced to notes by the same
function, :func:`events_to_notes`, so exporting a cleanly closed journal gives the same notes as
the ``.mid`` that :meth:`Session.close` wrote.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import mido

from lofi_live.errors import LofiError
from lofi_live.files import checked_file
from lofi_live.midi.files import TICKS_PER_BEAT, NoteEvent, write_midi

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


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return number


def _int_in(value: int, low: int, high: int, what: str) -> int:
    number = int(value)
    if number != value or not low <= number <= high:
        raise ValueError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return number


def _check_part(part: str) -> str:
    if not isinstance(part, str) or not _PART_RE.match(part) or part in RESERVED:
        raise ValueError(f"part must be a word like 'player' or 'model', not {part!r}")
    return part


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_bpm(bpm: float) -> float:
    value = _finite(bpm, "bpm")
    if not 1.0 <= value <= 1000.0:
        raise ValueError(f"bpm must be in 1..1000, not {bpm!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Events -> notes


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


def events_to_notes(events: Iterable[Event], end_beat: float | None = None) -> dict[str, list[NoteEvent]]:
    """Pair note-ons with note-offs per ``(part, channel, pitch)``; the one rule for journal and ``.mid``.

    * a note-on while the same note still sounds ends the sounding one there and starts a new one;
    * a note-off with nothing sounding is ignored; a note-off before its note-on's beat gives 0 length;
    * notes still sounding at the end end at ``end_beat`` (default: the ``end`` record, else the
      last event's beat), never before their start.

    Returns ``{part: [NoteEvent, ...]}`` sorted by start, with ``player`` and ``model`` always present.
    """
    events = list(events)
    if end_beat is None:
        ends = [event.beat for event in events if event.kind == "end"]
        end_beat = ends[-1] if ends else max((event.beat for event in events), default=0.0)
    notes: dict[str, list[NoteEvent]] = {part: [] for part in PARTS}
    sounding: dict[tuple[str, int, int], tuple[float, int]] = {}

    def finish(key: tuple[str, int, int], beat: float) -> None:
        start, velocity = sounding.pop(key)
        part, channel, pitch = key
        notes.setdefault(part, []).append(NoteEvent(start, max(0.0, beat - start), pitch, velocity, channel))

    for event in events:
        if event.kind not in ("on", "off"):
            continue
        key = (event.part, event.channel, event.pitch)
        if event.kind == "on" and event.velocity > 0:
            if key in sounding:
                finish(key, event.beat)
            sounding[key] = (event.beat, event.velocity)
        elif key in sounding:
            finish(key, event.beat)
    for key in list(sounding):
        finish(key, end_beat)
    for part_notes in notes.values():
        part_notes.sort()
    return notes


def tempo_map(data: SessionData) -> tuple[float, list[tuple[float, float]]]:
    """``(bpm at beat 0, [(beat, bpm), ...] later changes)`` from the header and ``tempo`` records."""
    start = data.bpm
    changes: list[tuple[float, float]] = []
    for event in sorted((e for e in data.events if e.kind == "tempo"), key=lambda e: e.beat):
        if event.beat <= 0:
            start = event.bpm
            continue
        current = changes[-1][1] if changes else start
        if abs(event.bpm - current) >= TEMPO_EPSILON:
            changes.append((event.beat, event.bpm))
    return start, changes


def write_session_midi(path: str | os.PathLike, data: SessionData, end_beat: float | None = None) -> Path:
    """Write the type-1 ``.mid`` of a session: tempo track, then ``player``, ``model`` (and any other part).

    Notes before beat 0 (a count-in) are clipped to start at 0. Tempo changes recorded with
    :meth:`Session.set_tempo` after beat 0 are added to the tempo track.
    """
    notes = events_to_notes(data.events, end_beat)
    clipped: list[tuple[str, list[NoteEvent]]] = []
    for part, part_notes in notes.items():
        kept = []
        for note in part_notes:
            if note.start < 0:
                end = note.start + note.duration
                note = NoteEvent(0.0, max(0.0, end), note.pitch, note.velocity, note.channel)
            kept.append(note)
        clipped.append((part, kept))
    bpm, changes = tempo_map(data)
    target = write_midi(path, clipped, bpm)
    markers = [(event.beat, marker_text(event)) for event in outages(data)]
    if changes or markers:
        _add_to_tempo_track(target, changes, markers)
    return target


def outages(data: SessionData) -> list[Event]:
    """The ``gap`` and ``back`` records: when the MIDI system or a port went away, and came back."""
    return sorted((event for event in data.events if event.kind in OUTAGE_KINDS), key=lambda event: event.beat)


def marker_text(event: Event) -> str:
    """A ``gap``/``back`` record as the ``.mid`` marker says it."""
    return f"{event.kind}: {event.text}".rstrip(": ")


def _add_to_tempo_track(target: Path, changes: Sequence[tuple[float, float]], markers: Sequence[tuple[float, str]]) -> None:
    """Insert ``set_tempo`` messages and markers into the tempo track of a file :func:`write_midi` wrote."""
    midi = mido.MidiFile(target)
    meta = midi.tracks[0]
    timed: list[tuple[int, int, mido.MetaMessage]] = []
    tick = 0
    for order, message in enumerate(meta):
        tick += message.time
        if message.type != "end_of_track":
            timed.append((tick, order, message))
    for beat, bpm in changes:
        timed.append((round(beat * TICKS_PER_BEAT), len(timed) + 10**6, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    for beat, text in markers:
        timed.append((max(0, round(beat * TICKS_PER_BEAT)), len(timed) + 10**6, mido.MetaMessage("marker", text=text)))
    timed.sort(key=lambda item: (item[0], item[1]))
    track = mido.MidiTrack()
    now = 0
    for tick, _, message in timed:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks[0] = track
    temporary = target.with_name(target.name + ".tmp")
    midi.save(temporary)
    os.replace(temporary, target)


# ---------------------------------------------------------------------------------------------
# Reading a journal


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
        return _check_bpm(float(fields["bpm"]))
    except ValueError:
        raise ValueError(f"journal header has a bad tempo bpm={fields['bpm']}") from None


def parse_event(line: str) -> Event:
    """One journal line (without its newline) -> :class:`Event`; ValueError when malformed."""
    words = line.split()
    if len(words) < 2:
        raise ValueError("too few fields")
    beat = _finite(float(words[0]), "beat")
    kind = words[1]
    if kind == "tempo":
        if len(words) != 3:
            raise ValueError("a tempo line is: BEAT tempo BPM")
        return Event(beat, "tempo", bpm=_check_bpm(float(words[2])))
    if kind in OUTAGE_KINDS:
        return Event(beat, kind, text=" ".join(words[2:]))
    if kind in ("mark", "end"):
        if len(words) != 2:
            raise ValueError(f"a {kind} line is: BEAT {kind}")
        return Event(beat, kind)
    if len(words) != 6 or words[2] not in ("on", "off"):
        raise ValueError("a note line is: BEAT PART on|off PITCH VELOCITY CHANNEL")
    part = _check_part(kind)
    return Event(
        beat, words[2], part,
        _int_in(int(words[3]), 0, 127, "pitch"),
        _int_in(int(words[4]), 0, 127, "velocity"),
        _int_in(int(words[5]), 0, 15, "channel"),
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


# ---------------------------------------------------------------------------------------------
# Recording


class Session:
    """A live session's recorder: thread-safe, journaled, written to a two-track ``.mid`` on close.

    ``record`` is the ``.mid`` to write (``None``: nothing is written, events are only kept in
    memory). With ``journal`` (the default) every event also goes to ``record + ".journal"``.
    Calls after :meth:`close` are ignored, so a late callback at shutdown cannot raise.
    Invalid arguments (pitch 200, a NaN beat) raise ValueError: they are the caller's bug.
    """

    def __init__(self, bpm: float, record: Path | str | None = None, journal: bool = True) -> None:
        self.bpm = _check_bpm(bpm)
        self.record = Path(record) if record is not None else None
        self.journal_path = Path(f"{self.record}.journal") if self.record is not None and journal else None
        self._events: list[Event] = []
        self._pending: list[str] = []
        self._lock = threading.Lock()  # guards events, pending and the closed flag
        self._io_lock = threading.Lock()  # guards the journal file
        self._closed = False
        self._written: Path | None = None
        self._last_beat = -math.inf
        self._file = None
        if self.record is not None:
            self._check_writable(self.record)
        if self.journal_path is not None:
            self._open_journal(self.journal_path)

    # -- set-up

    @staticmethod
    def _check_writable(target: Path) -> None:
        if target.is_dir():
            raise LofiError(f"{target}: is a folder; --record needs a .mid file name")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LofiError(f"{target.parent}: cannot create the folder ({error.strerror or error})") from None
        if not os.access(target.parent, os.W_OK):
            raise LofiError(f"{target.parent}: folder is not writable")

    def _open_journal(self, path: Path) -> None:
        if path.exists() and path.stat().st_size > 0:
            try:
                previous = read_journal(path, recover=True)
            except LofiError:
                previous = None
            if previous is None or not previous.ended:
                raise LofiError(
                    f"{path}: an unfinished session journal is already there; recover it with "
                    f"'lofi-live export --recover {path} -o recovered.mid' or remove it"
                )
        try:
            self._file = open(path, "w", encoding="utf-8", newline="\n")
            self._file.write(format_header(self.bpm))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise LofiError(f"{path}: cannot write the session journal ({error.strerror or error})") from None

    # -- recording

    def _add(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            self._events.append(event)
            if event.beat > self._last_beat:
                self._last_beat = event.beat
            if self._file is not None:
                self._pending.append(format_event(event))

    def note_on(self, beat: float, part: str, pitch: int, velocity: int, channel: int = 0) -> None:
        """A note starts (velocity 0 is a note-off, as in MIDI)."""
        velocity = _int_in(velocity, 0, 127, "velocity")
        if velocity == 0:
            self.note_off(beat, part, pitch, channel)
            return
        self._add(Event(_finite(beat, "beat"), "on", _check_part(part), _int_in(pitch, 0, 127, "pitch"),
                        velocity, _int_in(channel, 0, 15, "channel")))

    def note_off(self, beat: float, part: str, pitch: int, channel: int = 0) -> None:
        """A note ends (a note-off for a note that is not sounding is kept in the journal, ignored in the ``.mid``)."""
        self._add(Event(_finite(beat, "beat"), "off", _check_part(part), _int_in(pitch, 0, 127, "pitch"),
                        0, _int_in(channel, 0, 15, "channel")))

    def set_tempo(self, beat: float, bpm: float) -> None:
        """The tempo changed at ``beat`` (a tempo control, or a MIDI clock's new tempo); at or before
        beat 0 it sets the file's tempo."""
        self._add(Event(_finite(beat, "beat"), "tempo", bpm=_check_bpm(bpm)))

    def gap(self, beat: float, what: str) -> None:
        """``what`` (the MIDI system, a port) went away at ``beat``: a gap starts in the recording."""
        self._add(Event(_finite(beat, "beat"), "gap", text=_one_line(what)))

    def back(self, beat: float, what: str) -> None:
        """``what`` came back at ``beat``."""
        self._add(Event(_finite(beat, "beat"), "back", text=_one_line(what)))

    def flush(self, beat: float | None = None) -> None:
        """Write the pending journal lines in one ``write``, flush and ``fsync`` them.

        ``beat`` (optional): the engine's current beat; when it is past every recorded event a
        ``mark`` line records it, so notes held during a crash end there on recovery instead of
        at the last note event. Safe to call from any thread; no-op without a journal or after close.
        """
        if beat is not None and math.isfinite(beat):
            with self._lock:
                if not self._closed and self._file is not None and beat > self._last_beat:
                    self._last_beat = beat
                    self._pending.append(format_event(Event(float(beat), "mark")))
        with self._io_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if self._file is None:
            return
        try:
            if lines:
                self._file.write("".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
        except (OSError, ValueError) as error:  # disk full, file closed: never break the live loop
            print(f"lofi-live: warning: session journal {self.journal_path}: {error}", file=sys.stderr)

    def events(self) -> list[Event]:
        """A copy of every event recorded so far."""
        with self._lock:
            return list(self._events)

    def notes(self, end_beat: float | None = None) -> dict[str, list[NoteEvent]]:
        """The notes recorded so far, paired as in the ``.mid`` (sounding notes end at ``end_beat``)."""
        return events_to_notes(self.events(), end_beat)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, end_beat: float | None = None) -> Path | None:
        """End the session: notes still sounding end at ``end_beat`` (default: the last event).

        Appends an ``end`` line to the journal, closes it, and writes the ``.mid`` (returned; None
        when not recording). Calling it again returns the same path and writes nothing.
        """
        with self._io_lock:
            with self._lock:
                if self._closed:
                    return self._written
                if end_beat is None or not math.isfinite(end_beat):
                    end_beat = max(self._last_beat, 0.0) if self._events else 0.0
                end = Event(float(end_beat), "end")
                self._events.append(end)
                if self._file is not None:
                    self._pending.append(format_event(end))
                self._closed = True
                events = list(self._events)
            self._flush_locked()
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None
            if self.record is not None:
                try:
                    self._written = write_session_midi(self.record, SessionData(self.bpm, events, True), end.beat)
                except OSError as error:
                    raise LofiError(f"{self.record}: cannot write the session ({error.strerror or error})") from None
            return self._written

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
