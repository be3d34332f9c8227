"""Recording a live session: the crash-safe journal and the two-track ``.mid`` (``lofi-live export``: :mod:`lofi_live.commands.export`).

The engine thread records notes and tempo changes; the main thread flushes and closes::

    session = Session(bpm=90, record=Path("jam.mid"))      # journal: jam.mid.journal
    session.note_on(0.0, "player", 60, 100)
    session.note_off(0.45, "player", 60)
    session.flush()                                         # at least once a beat
    session.close(end_beat=16.0)                            # writes jam.mid

Every event is appended to the journal (:mod:`lofi_live.recording.journal`, ``docs/JOURNAL_FORMAT.md``) and kept in memory.
:meth:`Session.flush` writes the pending lines with one ``write`` and ``fsync``s them, so a
``kill -9`` or a power loss loses nothing up to the last flush; ``lofi-live export --recover``
rebuilds the notes from what is there. Journal and ``.mid`` are reduced to notes by the same
function, :func:`lofi_live.recording.notes.events_to_notes`, so exporting a cleanly closed journal gives the same notes as
the ``.mid`` that :meth:`Session.close` wrote.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

from lofi_live.errors import LofiError
from lofi_live.midi.files import NoteEvent
from lofi_live.recording.journal import (
    Event, SessionData, check_bpm, check_part, finite, format_event, format_header, int_in, one_line, read_journal,
)
from lofi_live.recording.notes import events_to_notes, write_session_midi



class Session:
    """A live session's recorder: thread-safe, journaled, written to a two-track ``.mid`` on close.

    ``record`` is the ``.mid`` to write (``None``: nothing is written, events are only kept in
    memory). With ``journal`` (the default) every event also goes to ``record + ".journal"``.
    Calls after :meth:`close` are ignored, so a late callback at shutdown cannot raise.
    Invalid arguments (pitch 200, a NaN beat) raise ValueError: they are the caller's bug.
    """

    def __init__(self, bpm: float, record: Path | str | None = None, journal: bool = True) -> None:
        self.bpm = check_bpm(bpm)
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
        velocity = int_in(velocity, 0, 127, "velocity")
        if velocity == 0:
            self.note_off(beat, part, pitch, channel)
            return
        self._add(Event(finite(beat, "beat"), "on", check_part(part), int_in(pitch, 0, 127, "pitch"),
                        velocity, int_in(channel, 0, 15, "channel")))

    def note_off(self, beat: float, part: str, pitch: int, channel: int = 0) -> None:
        """A note ends (a note-off for a note that is not sounding is kept in the journal, ignored in the ``.mid``)."""
        self._add(Event(finite(beat, "beat"), "off", check_part(part), int_in(pitch, 0, 127, "pitch"),
                        0, int_in(channel, 0, 15, "channel")))

    def set_tempo(self, beat: float, bpm: float) -> None:
        """The tempo changed at ``beat`` (a tempo control, or a MIDI clock's new tempo); at or before
        beat 0 it sets the file's tempo."""
        self._add(Event(finite(beat, "beat"), "tempo", bpm=check_bpm(bpm)))

    def gap(self, beat: float, what: str) -> None:
        """``what`` (the MIDI system, a port) went away at ``beat``: a gap starts in the recording."""
        self._add(Event(finite(beat, "beat"), "gap", text=one_line(what)))

    def back(self, beat: float, what: str) -> None:
        """``what`` came back at ``beat``."""
        self._add(Event(finite(beat, "beat"), "back", text=one_line(what)))

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
