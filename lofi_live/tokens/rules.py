"""The one set of token rules shared by training and the live runtime.

A token stands for one grid step (0.5 beat). Two tokenizations share these rules:

* an onset token, in both: a single note is ``str(pitch)`` in music21 spelling, e.g. ``C4``,
  ``E-4``, ``F#3`` (MIDI input always decodes to C#, E-, F#, G#, B-); a chord is its
  ``normalOrder`` (pitch classes) joined by dots, e.g. ``0.4.7`` or ``11.2.6``;
* ``hold`` and ``rest``, in the grid tokenization only (:mod:`lofi_live.tokens.grid`): a step with
  no onset on which a note still sounds, or nothing does. No note or chord token can take either
  spelling (a note starts with a letter A-G, a chord is made of digits).

The seed tokenization (:mod:`lofi_live.tokens.midi`) has onset tokens only, one per event.

Both sides import this module so that a token means the same thing everywhere. The chord
normal-order table was generated once from music21 for all 4095 pitch-class sets, so the
runtime reproduces music21 exactly without importing it.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

#: Length of one grid step, in beats (quarter notes).
GRID_BEATS = 0.5
#: The tempo range every path takes (BPM): ``--bpm``, the tempo control, a DAW's MIDI clock, Link.
MIN_BPM, MAX_BPM = 20.0, 400.0


def check_bpm(bpm: float) -> float:
    """``bpm`` when it is in :data:`MIN_BPM`..:data:`MAX_BPM`, else a ValueError saying the range."""
    if not MIN_BPM <= bpm <= MAX_BPM:
        raise ValueError(f"tempo {bpm:g} BPM outside {MIN_BPM:g}..{MAX_BPM:g}")
    return float(bpm)


def clamp_bpm(bpm: float) -> float:
    """The nearest tempo in :data:`MIN_BPM`..:data:`MAX_BPM` (a tempo control, a measured clock)."""
    return min(MAX_BPM, max(MIN_BPM, float(bpm)))

_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
#: music21's spelling of the twelve pitch classes when it decodes MIDI.
_PC_NAMES = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "G#", "A", "B-", "B")
_NOTE_RE = re.compile(r"^([A-Ga-g])(#{1,2}|-{1,2})?(-?[0-9]+)$")
#: ASCII digits only: ``str.isdigit`` also accepts "²" or "٣", which ``int`` then rejects or reads.
_CHORD_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")

#: Chord voicing range: the chord's lowest note lands in [CHORD_FLOOR, CHORD_FLOOR + 11].
CHORD_FLOOR = 48


#: The grid tokenization's step without an onset while a note sounds on: keep it sounding.
HOLD = "hold"
#: The grid tokenization's step without an onset or a sounding note: silence.
REST = "rest"
#: Tokens that name a rhythm, not pitches.
RHYTHM_TOKENS = (HOLD, REST)
#: The three rhythm classes of a grid step (``evaluate``'s ``rhythm_accuracy`` scores them).
RHYTHM_CLASSES = ("onset", HOLD, REST)
#: Tokenizations a corpus or a model can record: ``seed`` (onsets only) and ``grid`` (every step).
TOKENIZATIONS = ("seed", "grid")


class TokenError(ValueError):
    """A string that is neither a note name nor a chord token."""


@lru_cache(maxsize=1)
def _normal_order_table() -> dict[str, str]:
    text = resources.files("lofi_live").joinpath("data/normal_order.json").read_text()
    return json.loads(text)["normal_order"]


def is_rhythm(token: str) -> bool:
    """``hold`` or ``rest``: a grid step that starts no note."""
    return token in RHYTHM_TOKENS


def rhythm_class(token: str) -> str:
    """``"onset"``, ``"hold"`` or ``"rest"``: what a grid step does, whatever its pitches."""
    return token if token in RHYTHM_TOKENS else "onset"


def is_chord(token: str) -> bool:
    """A chord token is made of digits and dots (a lone pitch class like ``7`` counts too)."""
    return bool(_CHORD_RE.fullmatch(token))


def note_to_midi(name: str) -> int:
    """``C4`` -> 60, ``E-4`` -> 63, ``F##3`` -> 55; raises TokenError on anything else.

    music21 writes octave -1 as e.g. ``C-1``, which also reads as C-flat in octave 1. Its
    MIDI spelling only flattens E and B, so ``E-1``/``B-1`` are flats in octave 1 and any
    other letter followed by ``-1`` is octave -1 (so MIDI 3, 4, 10 and 11, far below any
    piano, are the only pitches whose names do not round-trip).
    """
    match = _NOTE_RE.match(name.strip())
    if not match:
        raise TokenError(f"not a note name: {name!r}")
    letter, accidental, octave = match.group(1).upper(), match.group(2) or "", int(match.group(3))
    if accidental == "-" and octave == 1 and letter not in "EB":
        accidental, octave = "", -1
    shift = accidental.count("#") - accidental.count("-")
    midi = 12 * (octave + 1) + _LETTER_PC[letter] + shift
    if not 0 <= midi <= 127:
        raise TokenError(f"note {name!r} is outside the MIDI range")
    return midi


def midi_to_note(midi: int) -> str:
    """60 -> ``C4``, 63 -> ``E-4``: music21's spelling of a MIDI pitch."""
    if not 0 <= midi <= 127:
        raise TokenError(f"MIDI pitch {midi} is outside 0..127")
    return f"{_PC_NAMES[midi % 12]}{midi // 12 - 1}"


def chord_pitch_classes(token: str) -> list[int]:
    """``11.2.6`` -> [11, 2, 6], in the token's (normal) order."""
    if not is_chord(token):
        raise TokenError(f"not a chord token: {token!r}")
    pcs = [int(part) for part in token.split(".")]
    if any(pc > 11 for pc in pcs):
        raise TokenError(f"chord token {token!r} has a pitch class above 11")
    return pcs


def normal_order(pitch_classes: Iterable[int]) -> list[int]:
    """music21's ``Chord.normalOrder`` for a set of pitch classes (or MIDI pitches)."""
    pcs = sorted({int(p) % 12 for p in pitch_classes})
    if not pcs:
        raise TokenError("a chord needs at least one pitch")
    return [int(x) for x in _normal_order_table()[".".join(map(str, pcs))].split(".")]


def chord_token(pitches: Iterable[int]) -> str:
    """The chord token of MIDI pitches (or pitch classes): normalOrder joined by dots."""
    return ".".join(map(str, normal_order(pitches)))


def onset_token(pitches: Sequence[int]) -> str:
    """The token of the notes that start together on one grid step.

    One pitch is a note token (``C4``); two or more are a chord token, as music21 turns
    simultaneous MIDI notes into a Chord.
    """
    unique = sorted(set(int(p) for p in pitches))
    if not unique:
        raise TokenError("an onset needs at least one pitch")
    if len(unique) == 1:
        return midi_to_note(unique[0])
    return chord_token(unique)


def voice_chord(pitch_classes: Sequence[int], floor: int = CHORD_FLOOR) -> list[int]:
    """Voice pitch classes as a close chord stacked upward from the first one.

    music21 decodes a chord token into octave 4 and loses register and inversion, so the
    voicing is chosen here on purpose: the first pitch class of the normal order sits in
    ``[floor, floor + 11]`` (C3..B3 by default) and each next one is the nearest pitch above
    the previous. A chord of one pitch class (music21's name for octave doublings, e.g. ``7``) is
    that pitch class in two octaves. The pitch-class set, and so the token, survives a round trip:
    this is the one voicing of ``generate``, the live engine and the grid renderer.
    """
    if len(pitch_classes) == 1:
        low = floor + (pitch_classes[0] - floor) % 12
        return [low, low + 12]
    pitches: list[int] = []
    for pc in pitch_classes:
        if not pitches:
            pitch = floor + (pc - floor) % 12
        else:
            pitch = pitches[-1] + 1 + (pc - pitches[-1] - 1) % 12
        pitches.append(pitch)
    return pitches


def token_pitches(token: str, floor: int = CHORD_FLOOR) -> list[int]:
    """The MIDI pitches a token strikes: one for a note, a voiced chord for a chord, none for hold/rest."""
    if token in RHYTHM_TOKENS:
        return []
    if is_chord(token):
        return voice_chord(chord_pitch_classes(token), floor)
    return [note_to_midi(token)]


def token_pitch_classes(token: str) -> set[int]:
    """Pitch classes of a token, used by key detection and scale locking (none for hold/rest)."""
    if token in RHYTHM_TOKENS:
        return set()
    if is_chord(token):
        return set(chord_pitch_classes(token))
    return {note_to_midi(token) % 12}


def transpose_token(token: str, semitones: int) -> str | None:
    """Move a token by semitones: a note moves with its octave, a chord's pitch classes rotate.

    Returns None when a note would leave the MIDI range. A transposed chord is renormalised,
    so its token is music21's normalOrder of the moved set; hold and rest stay as they are.
    """
    if token in RHYTHM_TOKENS:
        return token
    if is_chord(token):
        return chord_token(pc + semitones for pc in chord_pitch_classes(token))
    midi = note_to_midi(token) + semitones
    return midi_to_note(midi) if 0 <= midi <= 127 else None


#: Distance from hold or rest to any other token (pitched distances stay below 12 * 12 + 12).
RHYTHM_DISTANCE = 1000.0


def token_distance(a: str, b: str) -> float:
    """How far apart two tokens sound; the rule behind :func:`nearest_token`.

    * note to note: the interval in semitones;
    * chord to chord: 12 x the size of the symmetric difference of the pitch-class sets,
      so chords sharing more pitch classes are nearer (ties broken by size difference);
    * note to chord or chord to note: 12 x (chord size) minus 6 if the note's pitch class
      is in the chord, so a lone note maps to a chord that contains it, and back;
    * hold or rest to anything else: :data:`RHYTHM_DISTANCE`, farther than any two pitched tokens,
      so the rhythm of a step survives a mapping to the nearest known token whenever it can.
    """
    if a in RHYTHM_TOKENS or b in RHYTHM_TOKENS:
        return 0.0 if a == b else RHYTHM_DISTANCE
    a_chord, b_chord = is_chord(a), is_chord(b)
    if not a_chord and not b_chord:
        return abs(note_to_midi(a) - note_to_midi(b))
    if a_chord and b_chord:
        sa, sb = set(chord_pitch_classes(a)), set(chord_pitch_classes(b))
        return 12 * len(sa ^ sb) + abs(len(sa) - len(sb)) * 0.5
    chord, note = (a, b) if a_chord else (b, a)
    pcs = set(chord_pitch_classes(chord))
    inside = note_to_midi(note) % 12 in pcs
    return 12 * len(pcs) - (6 if inside else -6)


def nearest_token(token: str, vocabulary: Sequence[str]) -> str:
    """The vocabulary token that sounds nearest to ``token`` (itself when known).

    Ties go to the token that comes first in the vocabulary, so the rule is deterministic.
    """
    if token in vocabulary:
        return token
    if not vocabulary:
        raise TokenError("empty vocabulary")
    return min(vocabulary, key=lambda known: token_distance(token, known))


def parse_token(token: str) -> str:
    """Validate a token string and return it unchanged; raises TokenError when malformed."""
    if token in RHYTHM_TOKENS:
        return token
    token_pitches(token)
    return token
