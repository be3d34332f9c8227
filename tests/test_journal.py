"""The session journal: format round trips, truncated and damaged files, and ``lofi-live export``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofi_live.cli import main
from lofi_live.midi.files import midi_notes, write_midi, NoteEvent
from lofi_live.recording.journal import Event, format_event, format_header, parse_event, read_journal
from lofi_live.recording.notes import events_to_notes
from lofi_live.recording.session import Session
from lofi_live.errors import LofiError

beats = st.floats(min_value=-1e6, max_value=1e9, allow_nan=False, allow_infinity=False)
parts = st.sampled_from(["player", "model"])
note_events = st.builds(
    lambda beat, kind, part, pitch, velocity, channel: Event(beat, kind, part, pitch, velocity, channel),
    beats, st.sampled_from(["on", "off"]), parts, st.integers(0, 127), st.integers(0, 127), st.integers(0, 15),
)
other_events = st.one_of(
    st.builds(lambda b, bpm: Event(b, "tempo", bpm=bpm), beats, st.floats(1.0, 1000.0)),
    st.builds(lambda b: Event(b, "mark"), beats),
    st.builds(lambda b, kind, what: Event(b, kind, text=what), beats, st.sampled_from(["gap", "back"]),
              st.sampled_from(["the JACK server", "MIDI output 'Synth:midi_in'"])),
)
events = st.one_of(note_events, other_events)


@given(events)
def test_every_event_line_parses_back_to_itself(event: Event) -> None:
    line = format_event(event)
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_event(line.rstrip("\n")) == event


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(note_events, max_size=60), st.floats(20.0, 300.0))
def test_journal_file_round_trip(tmp_path: Path, recorded: list[Event], bpm: float) -> None:
    """What a Session records is exactly what read_journal gives back, and both reduce to the same notes."""
    target = tmp_path / "round.mid"
    for leftover in tmp_path.glob("round.mid*"):
        leftover.unlink()
    session = Session(bpm, target)
    for event in recorded:
        if event.kind == "on":
            session.note_on(event.beat, event.part, event.pitch, event.velocity, event.channel)
        else:
            session.note_off(event.beat, event.part, event.pitch, event.channel)
    session.flush()
    in_memory = session.events()
    data = read_journal(session.journal_path, recover=True)
    assert data.bpm == bpm
    assert data.events == in_memory
    assert data.skipped == []
    session.close()
    closed = read_journal(session.journal_path)
    assert closed.ended
    assert events_to_notes(closed.events) == events_to_notes(session.events())


def _journal(tmp_path: Path, lines: list[str], name: str = "s.mid.journal") -> Path:
    path = tmp_path / name
    path.write_text(format_header(100.0) + "".join(lines))
    return path


def test_truncated_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = _journal(tmp_path, ["0.0 player on 60 100 0\n", "0.5 player off 60 0 0\n", "1.0 model on 64 9"])
    data = read_journal(path, recover=True)
    assert [e.kind for e in data.events] == ["on", "off"]
    assert data.skipped == [4]
    # without --recover too: a cut last line is what a crash leaves, never an error by itself
    assert len(read_journal(path).events) == 2


def test_truncation_at_every_byte_recovers_a_prefix(tmp_path: Path) -> None:
    """Cutting a journal anywhere gives the complete lines before the cut, never an error."""
    session = Session(120.0, tmp_path / "cut.mid")
    for step in range(6):
        session.note_on(step * 0.5, "player" if step % 2 else "model", 60 + step, 90)
        session.note_off(step * 0.5 + 0.4, "player" if step % 2 else "model", 60 + step)
    session.close(4.0)
    full = session.journal_path.read_bytes()
    header_end = full.index(b"\n") + 1
    complete = read_journal(session.journal_path).events
    cut = tmp_path / "cut.journal"
    for size in range(header_end, len(full) + 1):
        cut.write_bytes(full[:size])
        data = read_journal(cut, recover=True)
        assert data.events == complete[: len(data.events)]
        whole_lines = full[header_end:size].count(b"\n")
        assert len(data.events) == whole_lines


def test_garbage_line_is_an_error_unless_recovering(tmp_path: Path) -> None:
    path = _journal(tmp_path, ["0.0 player on 60 100 0\n", "\x00\x00\x00garbage\n", "0.5 player off 60 0 0\n", "1.0 end\n"])
    with pytest.raises(LofiError, match=r"s\.mid\.journal line 3: unreadable"):
        read_journal(path)
    data = read_journal(path, recover=True)
    assert data.skipped == [3]
    assert events_to_notes(data.events)["player"] == [NoteEvent(0.0, 0.5, 60, 100, 0)]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"MThd\x00\x00\x00\x06", "is a MIDI file"),
        (b"hello world\n", "not a lofi-live session journal"),
        (b"lofi-live-journal 9 bpm=120\n", "version 9 is not supported"),
        (b"lofi-live-journal 1 bpm=abc\n", "bad tempo"),
        (b"lofi-live-journal 1\n", "no bpm"),
        (b"lofi-live-journal 1 bpm=12", "truncated journal header"),
        (b"\xff\xfe\x00binary", "not a lofi-live session journal"),
    ],
)
def test_bad_journals_are_one_line_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.journal"
    path.write_bytes(content)
    with pytest.raises(LofiError, match=reason) as caught:
        read_journal(path, recover=True)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_and_folder_paths(tmp_path: Path) -> None:
    with pytest.raises(LofiError, match="no such file"):
        read_journal(tmp_path / "nope.journal")
    with pytest.raises(LofiError, match="is a folder"):
        read_journal(tmp_path)


# ---- lofi-live export ------------------------------------------------------------------------


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _finished_session(tmp_path: Path) -> Session:
    session = Session(96.0, tmp_path / "jam.mid")
    session.note_on(0.0, "player", 60, 100)
    session.note_off(0.5, "player", 60)
    session.note_on(1.0, "model", 67, 80)
    session.note_on(1.0, "model", 71, 80)
    session.note_off(1.45, "model", 67)
    session.close(end_beat=2.0)
    return session


def test_export_of_a_finished_session_matches_its_mid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = _finished_session(tmp_path)
    out = tmp_path / "out.mid"
    code, stdout, _ = _run_cli(capsys, "export", str(session.journal_path), "-o", str(out))
    assert code == 0 and "1 player, 2 model notes" in stdout
    assert midi_notes(mido.MidiFile(out)) == midi_notes(mido.MidiFile(tmp_path / "jam.mid"))
    # FILE.mid is accepted as SESSION when its journal is beside it
    code, _, _ = _run_cli(capsys, "export", str(tmp_path / "jam.mid"), "-o", str(tmp_path / "again.mid"))
    assert code == 0
    assert midi_notes(mido.MidiFile(tmp_path / "again.mid")) == midi_notes(mido.MidiFile(out))


def test_a_gap_in_the_session_is_a_marker_in_the_mid_and_a_line_of_export(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    session = Session(120.0, tmp_path / "gap.mid")
    session.note_on(0.0, "player", 60, 100)
    session.note_off(0.5, "player", 60)
    session.gap(2.25, "the JACK server")
    session.back(8.5, "the JACK server")
    session.note_on(9.0, "model", 67, 80)
    session.close(end_beat=10.0)
    assert "2.25 gap the JACK server\n" in session.journal_path.read_text()
    for path in (tmp_path / "gap.mid", tmp_path / "exported.mid"):
        if path.name == "exported.mid":
            code, stdout, _ = _run_cli(capsys, "export", str(session.journal_path), "-o", str(path))
            assert code == 0
            assert "beat 2.25: gap: the JACK server" in stdout and "beat 8.50: back: the JACK server" in stdout
        midi = mido.MidiFile(path)
        tick, markers = 0, []
        for message in midi.tracks[0]:
            tick += message.time
            if message.type == "marker":
                markers.append((tick / midi.ticks_per_beat, message.text))
        assert markers == [(2.25, "gap: the JACK server"), (8.5, "back: the JACK server")]


def test_export_refuses_an_unfinished_journal_and_recover_restores_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _journal(tmp_path, ["0.0 player on 60 100 0\n", "0.5 player off 60 0 0\n", "1.0 model on 64 80 0\n", "3.5 mark\n", "4.0 model on 6"])
    code, _, err = _run_cli(capsys, "export", str(path), "-o", str(tmp_path / "x.mid"))
    assert code == 2 and "did not end cleanly" in err and "--recover" in err and err.count("\n") == 1
    code, stdout, err = _run_cli(capsys, "export", "--recover", str(path), "-o", str(tmp_path / "r.mid"))
    assert code == 0, err
    assert "skipped 1" in err
    notes = midi_notes(mido.MidiFile(tmp_path / "r.mid"))
    assert notes == [("player", NoteEvent(0.0, 0.5, 60, 100, 0)), ("model", NoteEvent(1.0, 2.5, 64, 80, 0))]
    # default output name: NAME.recovered.mid beside the journal
    code, stdout, _ = _run_cli(capsys, "export", "--recover", str(path))
    assert code == 0 and (tmp_path / "s.recovered.mid").exists()


@pytest.mark.parametrize(
    "setup, argv_tail, reason",
    [
        (None, ["missing.journal"], "no such file"),
        (b"", ["empty.journal"], "empty file"),
        (b"not a journal at all\n", ["text.journal"], "not a lofi-live session journal"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0", ["song.mid"], "is a MIDI file"),
        (None, [], "give either SESSION or --recover"),
    ],
)
def test_export_bad_input_is_exit_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  setup: bytes | None, argv_tail: list[str], reason: str) -> None:
    if setup is not None:
        (tmp_path / argv_tail[0]).write_bytes(setup)
    args = [str(tmp_path / a) for a in argv_tail]
    for recover in (False, True):
        if recover and not args:
            continue
        argv = ["export", "--recover", *args] if recover else ["export", *args]
        code, stdout, err = _run_cli(capsys, *argv, "-o", str(tmp_path / "o.mid"))
        assert code == 2
        assert reason in err and err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "o.mid").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="chmod does not make files unreadable on Windows")
def test_unreadable_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _journal(tmp_path, ["1.0 end\n"])
    path.chmod(0)
    try:
        if path.open("rb").readable():  # running as root: permissions do not apply
            pytest.skip("running as root, files are always readable")
    except PermissionError:
        pass
    try:
        code, _, err = _run_cli(capsys, "export", str(path), "-o", str(tmp_path / "o.mid"))
        assert code == 2 and "cannot be read" in err and err.count("\n") == 1
    finally:
        path.chmod(0o644)


def test_export_through_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b"\x00\x01\x02")
    result = subprocess.run([sys.executable, "-m", "lofi_live.cli", "export", str(bad), "-o", str(tmp_path / "o.mid")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and str(bad) in result.stderr


def test_export_output_cannot_overwrite_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = _finished_session(tmp_path)
    code, _, err = _run_cli(capsys, "export", str(session.journal_path), "-o", str(session.journal_path))
    assert code == 2 and "overwrite the journal" in err
    assert read_journal(session.journal_path).ended


def test_write_midi_of_other_tool_is_not_a_journal(tmp_path: Path) -> None:
    song = write_midi(tmp_path / "song.mid", [("piano", [NoteEvent(0, 1, 60)])], 120)
    with pytest.raises(LofiError, match="is a MIDI file"):
        read_journal(song)
