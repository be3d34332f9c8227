"""``lofi-live export``: a session's journal to a ``.mid``, also one a crash left behind.

The journal format is ``docs/JOURNAL_FORMAT.md``; reading it and writing the ``.mid`` are
:mod:`lofi_live.recording.session`'s, so an export gives the same notes as the ``.mid`` the session wrote.
The gaps (the MIDI system or a port gone, and back) are printed and become markers in the file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lofi_live.errors import LofiError
from lofi_live.recording.journal import SessionData, read_journal
from lofi_live.recording.notes import events_to_notes, marker_text, outages, tempo_map, write_session_midi


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a saved session journal (FILE.mid.journal, written by 'lofi-live run --record FILE.mid') "
        "to a two-track .mid; --recover restores a journal left by a crash."
    )
    parser.add_argument("session", nargs="?", metavar="SESSION",
                        help="a finished session's journal (FILE.mid.journal, or FILE.mid when its journal is beside it)")
    parser.add_argument("--recover", metavar="JOURNAL",
                        help="a journal left by a crash or kill: restore every note up to its last flushed line; "
                             "notes without a note-off end at the last journaled beat")
    parser.add_argument("-o", "--output", metavar="OUT.mid",
                        help="the .mid to write (default: the journal's name without .journal; "
                             "with --recover, NAME.recovered.mid)")


def _journal_of(session: str) -> Path:
    path = Path(session)
    beside = Path(f"{path}.journal")
    if path.suffix.lower() in (".mid", ".midi") and beside.exists():
        return beside
    return path


def _default_output(journal: Path, recover: bool) -> Path:
    name = journal.name[: -len(".journal")] if journal.name.endswith(".journal") else journal.name + ".mid"
    if recover:
        stem = name[:-4] if name.lower().endswith(".mid") else name
        name = f"{stem}.recovered.mid"
    return journal.with_name(name)


def export(journal: str | os.PathLike, output: str | os.PathLike, recover: bool = False) -> tuple[Path, SessionData]:
    """Convert a journal to a ``.mid``; the function behind ``lofi-live export``."""
    journal = Path(journal)
    data = read_journal(journal, recover=recover)
    if not recover and not data.ended:
        raise LofiError(
            f"{journal}: the session did not end cleanly (no 'end' line); "
            f"use 'lofi-live export --recover {journal} -o OUT.mid'"
        )
    target = Path(output)
    if target.resolve() == journal.resolve():
        raise LofiError(f"{target}: the output would overwrite the journal")
    if target.is_dir():
        raise LofiError(f"{target}: is a folder; -o needs a .mid file name")
    try:
        write_session_midi(target, data, data.end_beat())
    except OSError as error:
        raise LofiError(f"{target}: cannot write ({error.strerror or error})") from None
    return target, data


def run(args: argparse.Namespace) -> int:
    if bool(args.session) == bool(args.recover):
        raise LofiError("give either SESSION or --recover JOURNAL (one of them)")
    recover = bool(args.recover)
    journal = Path(args.recover) if recover else _journal_of(args.session)
    output = Path(args.output) if args.output else _default_output(journal, recover)
    target, data = export(journal, output, recover)
    notes = events_to_notes(data.events, data.end_beat())
    counts = ", ".join(f"{len(part_notes)} {part}" for part, part_notes in notes.items())
    print(f"wrote {target}: {counts} notes, {data.end_beat():g} beats at {tempo_map(data)[0]:g} BPM")
    for event in outages(data):
        print(f"  beat {event.beat:.2f}: {marker_text(event)}")
    if data.skipped:
        lines = ", ".join(map(str, data.skipped[:5])) + (" ..." if len(data.skipped) > 5 else "")
        print(f"skipped {len(data.skipped)} unreadable or truncated line(s) of {journal}: line {lines}", file=sys.stderr)
    return 0
