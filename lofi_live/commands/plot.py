"""``lofi-live plot SESSION.mid -o roll.png``: a piano roll of a session, player against model.

Tracks named ``player`` and ``model`` (as :class:`lofi_live.recording.session.Session` writes them) get
their own colours, and so do tracks named ``player (...)`` / ``model (...)``: ``lofi-live generate`` writes its
continuation as ``model`` and, with ``--with-seed``, the clip it heard as ``player (seed)``. A track named
``lofi-live`` (``generate``'s files before the track was named ``model``) is the model's. A file without
those names is drawn by track order (first track with notes = player, second = model, others in further
colours). The x axis is in beats with a line on
every 0.5-beat grid step and stronger bar lines (from the file's time signature, 4/4 by default).
matplotlib is an optional dependency (``pip install lofi-live[plot]``), imported only when drawing,
and used through its Agg canvas without pyplot, so no GUI backend or global state is touched.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import mido

from lofi_live.errors import LofiError
from lofi_live.midi.files import NoteEvent, first_tempo_bpm, midi_notes, read_midi
from lofi_live.tokens.rules import GRID_BEATS, midi_to_note

#: Colours of the player, the model and any further part (colour-blind safe: blue, orange, ...).
PART_COLOURS = {"player": "#1f77b4", "model": "#ff7f0e"}
EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Track names of the model's notes in older files (``generate`` named its only track so).
MODEL_ALIASES = ("lofi-live",)
#: Widest figure drawn, in inches: a long session gets a dense x axis rather than a huge PNG.
MAX_WIDTH_IN = 40.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", metavar="SESSION.mid", help="a session .mid (e.g. written by 'lofi-live run --record')")
    parser.add_argument("-o", "--output", metavar="roll.png", help="the PNG to write (default: SESSION.png)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default 100)")
    parser.add_argument("--title", help="the plot's title (default: the file name and tempo)")


def beats_per_bar(midi: mido.MidiFile) -> float:
    """Beats (quarter notes) per bar from the first time signature, 4 when there is none."""
    for track in midi.tracks:
        for message in track:
            if message.type == "time_signature":
                return message.numerator * 4 / message.denominator
    return 4.0


def group_parts(found: Sequence[tuple[str, NoteEvent]]) -> dict[str, list[NoteEvent]]:
    """``{label: notes}`` with the player's parts, then the model's, first.

    Named tracks keep their names (a :data:`MODEL_ALIASES` track becomes ``model``); when no track is the
    player's or the model's (``player``, ``model``, ``player (...)``, ``model (...)``), the tracks with notes
    are labelled by order: ``player``, ``model``, then their own names.
    """
    by_track: dict[str, list[NoteEvent]] = {}
    for name, note in found:
        by_track.setdefault("model" if name.strip().lower() in MODEL_ALIASES else name, []).append(note)
    if not any(_part(label) for label in by_track):
        renamed: dict[str, list[NoteEvent]] = {}
        for index, (name, notes) in enumerate(by_track.items()):
            label = ("player", "model")[index] if index < 2 else name
            renamed[f"{label} ({name})" if label != name else label] = notes
        by_track = renamed
    order = sorted(by_track, key=lambda label: {"player": 0, "model": 1}.get(_part(label) or "", 2))
    return {label: by_track[label] for label in order}


def _part(label: str) -> str | None:
    """``player`` or ``model`` when a label names that part (``model``, ``player (seed)``), else None."""
    for part in PART_COLOURS:
        if label == part or label.startswith(part + " "):
            return part
    return None


def colour_of(label: str, index: int) -> str:
    part = _part(label)
    return PART_COLOURS[part] if part else EXTRA_COLOURS[index % len(EXTRA_COLOURS)]


def _draw_grid(ax, end: float, bar: float, pixels_per_beat: float) -> None:
    """Vertical lines: every grid step (0.5 beat) light, beats darker, bars strongest.

    Finer lines are left out when they would be closer than 3 pixels (long sessions).
    """
    steps = int(round(end / GRID_BEATS))
    beats = [i * GRID_BEATS for i in range(steps + 1)]
    on_bar = [b for b in beats if abs(b / bar - round(b / bar)) < 1e-9]
    on_beat = [b for b in beats if abs(b - round(b)) < 1e-9 and b not in on_bar]
    off_beat = [b for b in beats if abs(b - round(b)) >= 1e-9]
    if pixels_per_beat * GRID_BEATS >= 3:
        ax.vlines(off_beat, 0, 1, transform=ax.get_xaxis_transform(), colors="#e4e4e4", linewidth=0.6, zorder=0)
    if pixels_per_beat >= 3:
        ax.vlines(on_beat, 0, 1, transform=ax.get_xaxis_transform(), colors="#bbbbbb", linewidth=0.6, zorder=0)
    ax.vlines(on_bar, 0, 1, transform=ax.get_xaxis_transform(), colors="#444444", linewidth=1.2, zorder=0)


def _agg_figure(width: float, height: float, dpi: int):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global backend, no GUI, no state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise LofiError("plotting needs matplotlib: pip install lofi-live[plot]") from None
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def plot_session(path: str | Path, output: str | Path, dpi: int = 100, title: str | None = None) -> Path:
    """Draw the piano roll of ``path`` into the PNG ``output`` and return its path."""
    midi = read_midi(path)
    parts = group_parts(midi_notes(midi))
    notes = [note for part in parts.values() for note in part]
    if not notes:
        raise LofiError(f"{path}: no notes to plot")
    if dpi < 10 or dpi > 1200:
        raise LofiError(f"--dpi {dpi}: choose 10..1200")
    bar = beats_per_bar(midi)
    end = max(note.start + note.duration for note in notes)
    end = max(bar, math.ceil(end / bar) * bar)
    low = min(note.pitch for note in notes) - 1
    high = max(note.pitch for note in notes) + 1
    width = min(MAX_WIDTH_IN, max(8.0, end * 0.25 + 2))
    height = min(20.0, max(4.0, (high - low + 1) * 0.18 + 1.5))

    fig = _agg_figure(width, height, dpi)
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    ax = fig.add_subplot()
    _draw_grid(ax, end, bar, pixels_per_beat=width * dpi / end)
    for pitch in range(low, high + 1):
        if pitch % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(pitch - 0.5, pitch + 0.5, color="#f3f3f3", zorder=-1, linewidth=0)
    handles = []
    for index, (label, part_notes) in enumerate(parts.items()):
        colour = colour_of(label, index)
        boxes = [Rectangle((n.start, n.pitch - 0.4), max(n.duration, 0.05), 0.8) for n in part_notes]
        ax.add_collection(PatchCollection(boxes, facecolor=colour, edgecolor="black", linewidth=0.4, alpha=0.9, zorder=2))
        handles.append(Patch(facecolor=colour, edgecolor="black", label=f"{label} ({len(part_notes)} notes)"))
    ax.set_xlim(0, end)
    ax.set_ylim(low - 0.5, high + 0.5)
    bars = int(round(end / bar))
    label_every = max(1, math.ceil(40 / (width * dpi / max(bars, 1))))  # labels at least ~40 px apart
    ax.set_xticks([b * bar for b in range(0, bars + 1, label_every)])
    ax.set_xticklabels([str(b + 1) for b in range(0, bars + 1, label_every)])
    ax.set_xlabel(f"bar ({bar:g} beats; grid lines every {GRID_BEATS:g} beat)")
    span = high - low
    every = 1 if span <= 24 else 2 if span <= 48 else 12
    ticks = [p for p in range(low, high + 1) if (p % 12 == 0 if every == 12 else (p - low) % every == 0)]
    ax.set_yticks(ticks)
    ax.set_yticklabels([midi_to_note(p) for p in ticks])
    ax.set_ylabel("pitch")
    ax.set_title(title or f"{Path(path).name}: {first_tempo_bpm(midi):g} BPM")
    ax.legend(handles=handles, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target, dpi=dpi, format="png")
    except OSError as error:
        raise LofiError(f"{target}: cannot write ({error.strerror or error})") from None
    return target


def run(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.session).with_suffix(".png")
    target = plot_session(args.session, output, dpi=args.dpi, title=args.title)
    print(f"wrote {target}")
    return 0
