"""The live terminal view: what the engine is doing, redrawn about 8 times a second with rich.

The engine thread publishes an immutable :class:`EngineStatus` (``Engine.snapshot()``); the main
thread hands it to :meth:`LiveView.update` (cheap: it swaps one reference; drawing happens on rich's
refresh thread), so the view never reads state the engine is changing. ``--quiet`` means no
:class:`LiveView` is created. Only plain characters and the 8/16 basic colours are used, so the view works
over SSH, in tmux and screen, and stays readable without colour (player ``o``, model ``#``,
both ``*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lofi_live.model.loop_follow import DEFAULT_VARIATION
from lofi_live.tokens.rules import midi_to_note

#: Grid steps shown in the piano roll (32 beats at 0.5 beat a step).
ROLL_STEPS = 64
#: Pitch rows shown at most; a wider range is cut to the rows holding the most notes.
ROLL_ROWS = 18
#: Grid steps per bar (4/4 at 0.5 beat a step): a bar line every 8 columns.
STEPS_PER_BAR = 8
#: Cell characters and styles.
PLAYER_CELL, MODEL_CELL, BOTH_CELL = "o", "#", "*"
PLAYER_STYLE, MODEL_STYLE, BOTH_STYLE = "bold cyan", "bold magenta", "bold yellow"
STATE_STYLES = {"idle": "dim", "listening": "bold cyan", "responding": "bold magenta"}


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot of the engine for the view, never changed once made (all fields have neutral defaults)."""

    clock: str = "internal"  # "internal" | "midi" | "link"
    bpm: float = 120.0
    running: bool = False
    mode: str = "continue"
    state: str = "idle"  # "idle" | "listening" | "responding"
    key: str | None = None
    provider: str = "CPUExecutionProvider"
    model: str = ""  # name of the model playing (model_select switches it)
    response_bars: float = 4.0
    loop: bool = False  # the loop control is on: the last response repeats
    temperature: float = 1.0
    variation: float = DEFAULT_VARIATION  # 0..1: the network against the heard loop / the copy gate
    step_latency_ms: float = 0.0
    step_latency_p99_ms: float = 0.0
    step: int = 0
    late_steps: int = 0
    recent: tuple[tuple[int, str, tuple[int, ...]], ...] = ()  # (step, part, pitches)
    last_tokens: tuple[str, ...] = ()
    cc_map: tuple[tuple[str, int], ...] = ()  # (action, CC number)
    notice: str = ""  # the MIDI system or a port went away or came back (lofi_live.live.outage)
    swing: float = 50.0  # % (50 straight, 66 triplet)
    key_lock: bool = False  # the key lock is on (``key`` then names the key, or "auto")
    notes_player: int = 0  # note-ons played since the start
    notes_model: int = 0  # note-ons the model answered with
    next_boundary: float = 0.0  # perf_counter time the next grid step is sent (0: not known yet)


def render_header(status: EngineStatus) -> Table:
    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column()
    clock = {"midi": "MIDI clock", "link": "Ableton Link"}.get(status.clock, "internal clock")
    run_state = Text("running", style="bold green") if status.running else Text("stopped", style="bold red")
    state = Text(status.state, style=STATE_STYLES.get(status.state, ""))
    late = Text(str(status.late_steps), style="bold red" if status.late_steps else "green")
    grid.add_row(Text.assemble(("tempo ", "dim"), f"{status.bpm:.1f} BPM"), Text.assemble(("clock ", "dim"), clock),
                 run_state, Text.assemble(("step ", "dim"), str(status.step)))
    grid.add_row(Text.assemble(("mode ", "dim"), status.mode), Text.assemble(("state ", "dim"), state),
                 Text.assemble(("key ", "dim"), status.key or "free"),
                 Text.assemble(("temperature ", "dim"), f"{status.temperature:.2f}", ("  variation ", "dim"),
                               f"{status.variation:.2f}"))
    grid.add_row(Text.assemble(("provider ", "dim"), status.provider),
                 Text.assemble(("latency ", "dim"), f"{status.step_latency_ms:.1f} ms median"),
                 Text.assemble(("p99 ", "dim"), f"{status.step_latency_p99_ms:.1f} ms"),
                 Text.assemble(("late steps ", "dim"), late))
    grid.add_row(Text.assemble(("model ", "dim"), status.model or "-"),
                 Text.assemble(("response ", "dim"), f"{status.response_bars:g} bars"),
                 Text.assemble(("loop ", "dim"), Text("on", style="bold yellow") if status.loop else Text("off")),
                 Text(""))
    return grid


def _pitch_window(counts: dict[int, int], rows: int) -> tuple[int, int]:
    """The ``rows``-high pitch range holding the most notes (ties: the lower one)."""
    low, high = min(counts), max(counts)
    if high - low + 1 <= rows:
        return low, high
    best, best_low = -1, low
    for start in range(low, high - rows + 2):
        total = sum(counts.get(p, 0) for p in range(start, start + rows))
        if total > best:
            best, best_low = total, start
    return best_low, best_low + rows - 1


def render_roll(recent: Sequence[tuple[int, str, list[int]]], now: int, steps: int = ROLL_STEPS,
                rows: int = ROLL_ROWS) -> Text:
    """A text piano roll of the last ``steps`` grid steps up to ``now``: one row per pitch, high on top."""
    first = now - steps + 1
    cells: dict[tuple[int, int], str] = {}
    counts: dict[int, int] = {}
    for step, part, pitches in recent:
        if not first <= step <= now:
            continue
        for pitch in pitches:
            if not 0 <= pitch <= 127:
                continue
            kind = "player" if part == "player" else "model"
            before = cells.get((pitch, step))
            cells[(pitch, step)] = kind if before in (None, kind) else "both"
            counts[pitch] = counts.get(pitch, 0) + 1
    text = Text(no_wrap=True, overflow="crop")
    legend = Text.assemble(("o", PLAYER_STYLE), " player  ", ("#", MODEL_STYLE), " model  ", ("*", BOTH_STYLE), " both")
    if not counts:
        text.append("(no notes in the last {} steps)\n".format(steps), style="dim")
        text.append_text(legend)
        return text
    low, high = _pitch_window(counts, rows)
    hidden = sum(n for p, n in counts.items() if not low <= p <= high)
    symbols = {"player": (PLAYER_CELL, PLAYER_STYLE), "model": (MODEL_CELL, MODEL_STYLE), "both": (BOTH_CELL, BOTH_STYLE)}
    for pitch in range(high, low - 1, -1):
        runs: list[tuple[str, str]] = [(f"{midi_to_note(pitch):>4} ", "dim")]
        for step in range(first, now + 1):
            kind = cells.get((pitch, step))
            if kind:
                char, style = symbols[kind]
            else:
                char, style = ("|" if step % STEPS_PER_BAR == 0 else "." if step % 2 == 0 else " "), "dim"
            if runs[-1][1] == style:
                runs[-1] = (runs[-1][0] + char, style)
            else:
                runs.append((char, style))
        for chunk, style in runs:
            text.append(chunk, style=style)
        text.append("\n")
    text.append_text(legend)
    if hidden:
        text.append(f"  (+{hidden} notes outside {midi_to_note(low)}..{midi_to_note(high)})", style="dim")
    return text


def render(status: EngineStatus) -> RenderableType:
    """The whole view: header, piano roll, last tokens and CC mapping."""
    tokens = Text.assemble(("last tokens ", "dim"), " ".join(status.last_tokens[-16:]) or "-")
    if status.cc_map:
        pairs = "  ".join(f"{action}=CC{number}" for action, number in sorted(status.cc_map, key=lambda kv: kv[1]))
    else:
        pairs = "none (--config / --learn)"
    controls = Text.assemble(("CC map ", "dim"), pairs)
    notice = [Text(status.notice, style="bold red" if " is gone: " in status.notice else "bold green")] if status.notice else []
    return Group(
        Text("lofi-live", style="bold"),
        *notice,
        render_header(status),
        Text(""),
        render_roll(status.recent, status.step),
        Text(""),
        tokens,
        controls,
    )


class _Latest:
    """A renderable that draws the newest status each time rich refreshes."""

    def __init__(self, status: EngineStatus) -> None:
        self.status = status

    def __rich__(self) -> RenderableType:
        return render(self.status)


class LiveView:
    """The terminal view as a context manager: ``with LiveView() as view: view.update(status)``.

    Redraws at ``refresh_per_second`` (8) from rich's own thread; :meth:`update` only swaps the
    snapshot, so it costs microseconds, never a redraw.
    """

    def __init__(self, console: Console | None = None, refresh_per_second: float = 8.0,
                 status: EngineStatus | None = None) -> None:
        self._latest = _Latest(status or EngineStatus())
        self.console = console or Console(stderr=False)
        self._live = Live(self._latest, console=self.console, refresh_per_second=refresh_per_second,
                          auto_refresh=True, transient=False, redirect_stdout=True, redirect_stderr=True)

    def __enter__(self) -> "LiveView":
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    def update(self, status: EngineStatus) -> None:
        self._latest.status = status

    def refresh(self) -> None:
        """Draw now (the auto refresh does it anyway)."""
        self._live.refresh()
