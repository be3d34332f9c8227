"""MIDI file -> tokens at run time, without TensorFlow.

:func:`file_tokens` picks the rule of a model's tokenization (grid or seed). For seed tokens, two
ways, same rules as training (``docs/MODEL_FORMAT.md``):

* :func:`music21_tokens`: the seed's own loop, used whenever music21 is importable (it is imported
  lazily here, never at module import). ``s2 = instrument.partitionByInstrument(midi)``; with parts,
  ``s2.parts[0].recurse()``, else ``midi.flatten().notes``; a Note is ``str(pitch)``, a Chord is
  ``'.'.join(str(n) for n in normalOrder)``.
* :func:`mido_tokens`: a fast path that needs only mido. It mimics what music21's MIDI import does:
  notes of one track starting within a 16th of each other *and* ending within a 16th become a chord
  (a token from :func:`lofi_live.tokens.rules.onset_token` rules), offsets and durations are quantized to
  the nearer of the 16th and triplet-8th grids, notes crossing a barline are split (music21 ties them,
  and each tied piece is a token), tracks with the same program and the first channel's part are
  merged the way ``partitionByInstrument`` merges same-instrument parts. It is exact on most files of
  the shared data but not all (``tests/test_midi_tokens.py`` measures it); music21 is the reference.

Bad files raise :class:`LofiError` (via :func:`lofi_live.midi.files.check_midi_path`/``read_midi``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError
from lofi_live.midi.files import check_midi_path, read_midi
from lofi_live.midi.pairing import Paired, Pairing


def music21_available() -> bool:
    try:
        import music21  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def midi_file_tokens(path: str | os.PathLike, engine: str = "auto") -> list[str]:
    """Tokens of one MIDI file: ``engine`` is ``auto`` (music21 when installed), ``music21`` or ``mido``."""
    if engine == "music21" or (engine == "auto" and music21_available()):
        return music21_tokens(path)
    if engine not in ("auto", "mido"):
        raise ValueError(f"unknown tokenizer engine {engine!r}")
    return mido_tokens(path)


def file_tokens(path: str | os.PathLike, kind: str) -> list[str]:
    """Tokens of one MIDI file under a model's tokenization: the one rule every command uses for a seed file.

    ``grid``: :func:`lofi_live.tokens.grid.file_tokens` (mido); ``seed``: :func:`midi_file_tokens`
    (music21 when installed, else the mido path).
    """
    if kind == "grid":
        from lofi_live.tokens.grid import file_tokens as grid_file_tokens

        return grid_file_tokens(path)
    if kind != "seed":
        raise ValueError(f"unknown tokenization {kind!r}")
    return midi_file_tokens(path)


def seed_rule_tokens(path: str | os.PathLike) -> list[str]:
    """The seed's own music21 loop over one file: the training rules, shared with ``training.corpus.parse``.

    The seed wrapped ``partitionByInstrument(...).parts[0]`` in a bare try/except and fell back to
    the flat notes on any failure (no parts, or ``None`` returned); this does the same. music21 is
    imported here, lazily, and its own exceptions for unparsable files propagate.
    """
    from music21 import chord, converter, instrument, note

    midi = converter.parse(str(path))
    try:
        notes_to_parse = instrument.partitionByInstrument(midi).parts[0].recurse()
    except Exception:  # noqa: BLE001 - the seed's bare except: any failure means "no parts"
        notes_to_parse = midi.flatten().notes
    found: list[str] = []
    for element in notes_to_parse:
        if isinstance(element, note.Note):
            found.append(str(element.pitch))
        elif isinstance(element, chord.Chord):
            found.append(".".join(str(n) for n in element.normalOrder))
    return found


def music21_tokens(path: str | os.PathLike) -> list[str]:
    """:func:`seed_rule_tokens` with every failure turned into a one-line :class:`LofiError`."""
    file = check_midi_path(path)
    read_midi(file)  # the same one-line errors as the mido path for corrupt files
    try:
        return seed_rule_tokens(file)
    except Exception as error:  # noqa: BLE001 - music21 raises many types for bad files
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise LofiError(f"{file}: music21 cannot parse it ({reason})") from None


# --------------------------------------------------------------------------------------------
# The mido path


def _quantize(value: Fraction, divisors=(4, 3), zero: bool = True) -> Fraction:
    """music21's quantize: the nearest point of the grid (1/4 or 1/3 beat) with the smaller error.

    ``zero=False`` (a sounding note's duration) never rounds down to nothing.
    """
    best = None
    for divisor in divisors:
        candidate = Fraction(max(round(value * divisor), 0 if zero else 1), divisor)
        error = abs(candidate - value)
        if best is None or error < best[0]:
            best = (error, candidate)
    return best[1]


def _track_notes(track, channels: set[int] | None = None) -> list[tuple[int, int, int]]:
    """(on tick, off tick, pitch) of one track (its ``channels``, default all), in note-on order, paired as
    music21 pairs them (the ``stack`` re-strike rule of :mod:`lofi_live.midi.pairing`)."""
    pairing = Pairing("stack")
    paired: list[Paired] = []
    tick = 0
    for position, message in enumerate(track):
        tick += message.time
        if message.type not in ("note_on", "note_off") or (channels is not None and message.channel not in channels):
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            pairing.on(key, tick, position)
        else:
            paired += pairing.off(key, tick)
    paired.sort(key=lambda note: (note.start, note.data))  # note-on order, as music21 lists them
    return [(note.start, note.end, note.key[1]) for note in paired]


def _track_events(notes: list[tuple[int, int, int]], ticks: int) -> list[tuple[Fraction, Fraction, list[int]]]:
    """Group notes into chords the way music21's midiTrackToStream does, then quantize."""
    tolerance = ticks / 4
    gathered = [False] * len(notes)
    events = []
    for i, (on, off, pitch) in enumerate(notes):
        if gathered[i]:
            continue
        group = [pitch]
        for j in range(i + 1, len(notes)):
            on_j, off_j, pitch_j = notes[j]
            if abs(on_j - on) >= tolerance:
                break
            if abs(off_j - off) > tolerance:
                continue
            group.append(pitch_j)
            gathered[j] = True
        start = _quantize(Fraction(on, ticks))
        length = _quantize(Fraction(off - on, ticks), zero=False) if off > on else Fraction(0)
        events.append((start, length, group))
    return events


def _bar_length(midi) -> Fraction:
    for track in midi.tracks:
        for message in track:
            if message.type == "time_signature":
                return Fraction(4 * message.numerator, message.denominator)
    return Fraction(4)


def _program(track) -> int:
    return next((m.program for m in track if m.type == "program_change"), 0)


def mido_tokens(path: str | os.PathLike) -> list[str]:
    """Tokens of one MIDI file with mido only (see the module notes for how close it is to music21)."""
    midi = read_midi(path)
    ticks = midi.ticks_per_beat
    tracks = [t for t in midi.tracks if any(m.type == "note_on" and m.velocity > 0 for m in t)]
    if not tracks:
        return []
    if midi.type == 0 or len(tracks) == 1:
        # music21 splits a type-0 track by channel into parts; the first part is the first channel.
        track = tracks[0]
        channels = [m.channel for m in track if m.type == "note_on" and m.velocity > 0]
        first = channels[0]
        program = {m.channel: m.program for m in track if m.type == "program_change"}
        same = {c for c in set(channels) if program.get(c, 0) == program.get(first, 0) and c != 9} | {first}
        chosen = [(track, same)]
    else:
        program = _program(tracks[0])
        chosen = [(t, None) for t in tracks if _program(t) == program]
    bar = _bar_length(midi)
    pieces: list[tuple[Fraction, int, int, int, list[int]]] = []
    serial = 0
    for order, (track, channels) in enumerate(chosen):
        for start, length, group in _track_events(_track_notes(track, channels), ticks):
            serial += 1
            # a note crossing barlines is tied: one token per piece
            end = start + max(length, Fraction(0))
            point, tied = start, 0
            while True:
                bar_end = (point // bar + 1) * bar
                # at one offset: zero-length notes (grace notes to music21) first, then new notes,
                # then the tied pieces from the previous bar, each in file order
                rank = -1 if length == 0 else tied
                pieces.append((point, rank, order, serial, group))
                tied = 1
                if end <= bar_end:
                    break
                point = bar_end
    pieces.sort(key=lambda item: item[:4])
    found = []
    for *_, group in pieces:
        if len(group) == 1:
            found.append(token_rules.midi_to_note(group[0]))
        else:
            found.append(token_rules.chord_token(group))
    return found


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """``*.mid``/``*.midi`` below ``folder`` sorted by file name (the seed's stream order)."""
    root = Path(folder)
    if not root.exists():
        raise LofiError(f"{root}: no such folder")
    if not root.is_dir():
        raise LofiError(f"{root}: not a folder (give a folder of .mid/.midi files)")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".mid", ".midi")]
    return sorted(files, key=lambda p: (p.name, str(p)))
