"""The live terminal view, rendered into a recording rich Console (what tmux or SSH would show)."""

from __future__ import annotations

import dataclasses
import io
import time

import pytest

from rich.console import Console

from lofi_live.live.view import EngineStatus, LiveView, render, render_roll


def _status(**changes) -> EngineStatus:
    recent = [(100 + s, "player", (60 + s % 5,)) for s in range(0, 16)]
    recent += [(100 + s, "model", (48, 52, 55)) for s in range(16, 32)]
    status = EngineStatus(
        clock="midi", bpm=92.0, running=True, mode="accompany", state="responding", key="A minor",
        provider="CUDAExecutionProvider", temperature=0.85, step_latency_ms=1.25, step_latency_p99_ms=3.5,
        step=131, late_steps=2, recent=tuple(recent), last_tokens=("C4", "0.4.7", "E-4"),
        cc_map=(("temperature", 21), ("panic", 27), ("state_cc", 30)),
    )
    return dataclasses.replace(status, **changes)


def _text(status: EngineStatus, width: int = 100) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="standard")
    console.print(render(status))
    return console.export_text()


def test_header_shows_clock_tempo_mode_state_key_provider_latency() -> None:
    text = _text(_status())
    for expected in ("92.0 BPM", "MIDI clock", "running", "accompany", "responding", "A minor",
                     "CUDAExecutionProvider", "0.85", "1.2 ms median", "3.5 ms", "late steps 2", "step 131"):
        assert expected in text, expected


def test_roll_rows_are_pitches_and_parts_have_their_own_characters() -> None:
    text = _text(_status())
    rows = {line.split()[0]: line for line in text.splitlines() if line[:5].strip() in ("C4", "E4", "C3", "E3", "G3", "D4")}
    assert set(rows) >= {"C4", "E4", "C3", "E3", "G3"}
    assert "o" in rows["C4"][5:] and "#" not in rows["C4"][5:]  # the player played C4
    assert "#" in rows["C3"][5:] and "o" not in rows["C3"][5:]  # the model played the C3 chord
    assert "o player" in text and "# model" in text


def test_roll_moves_with_the_step() -> None:
    recent = [(10, "player", [60])]
    early = render_roll(recent, now=10, steps=16).plain.splitlines()[0]
    later = render_roll(recent, now=14, steps=16).plain.splitlines()[0]
    assert early.index("o") - later.index("o") == 4  # four steps later the note is four columns further left
    assert "no notes in the last 16 steps" in render_roll(recent, now=40, steps=16).plain  # scrolled out


def test_both_parts_on_one_cell_and_wide_ranges() -> None:
    roll = render_roll([(5, "player", [60]), (5, "model", [60])], now=5, steps=8).plain
    assert "*" in roll
    wide = render_roll([(s, "model", [30 + s * 3]) for s in range(30)], now=29, steps=32, rows=12).plain
    assert len([line for line in wide.splitlines() if line.strip()]) == 12 + 1  # 12 pitch rows + legend
    assert "notes outside" in wide


def test_tokens_cc_map_and_empty_states() -> None:
    text = _text(_status())
    assert "C4 0.4.7 E-4" in text
    assert "temperature=CC21" in text and "panic=CC27" in text and "state_cc=CC30" in text
    idle = _text(EngineStatus())
    assert "no notes in the last" in idle and "internal clock" in idle and "free" in idle
    assert "--learn" in idle


def test_live_view_redraws_the_latest_status_which_nobody_can_change() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100, color_system=None)
    status = _status()
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.temperature = 1.9  # type: ignore[misc]  # a published status is never changed
    with LiveView(console=console, refresh_per_second=8) as view:
        view.update(status)
        view.refresh()
        start = time.perf_counter()
        for step in range(200):
            view.update(dataclasses.replace(status, step=step))
        per_update = (time.perf_counter() - start) / 200
        view.update(_status(bpm=101.5, temperature=1.9))
        view.refresh()
    drawn = output.getvalue()
    assert "92.0 BPM" in drawn and "101.5 BPM" in drawn and "1.90" in drawn
    assert per_update < 0.002  # update() only swaps the snapshot; drawing happens at 8 Hz on rich's thread


def test_render_cost_is_small() -> None:
    status = _status(recent=tuple((s, "player" if s % 3 else "model", (50 + s % 20, 62)) for s in range(64)), step=63)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    start = time.perf_counter()
    for _ in range(20):
        console.print(render(status))
    per_frame = (time.perf_counter() - start) / 20
    print(f"render: {per_frame * 1e3:.2f} ms per frame")
    assert per_frame < 0.1


def test_what_went_away_is_said_at_the_top_and_nothing_when_all_is_well() -> None:
    line = ("the JACK server is gone: holding: the model paused, its notes released, a gap marked in the recording; "
            "the ports reopen by themselves when it returns; Ctrl-C to stop")
    text = _text(_status(notice=line), width=240)
    assert text.splitlines()[1] == line  # right under the title, one line on a wide terminal
    calm = _text(_status()).splitlines()
    assert not any("is gone" in row or "is back" in row for row in calm) and "tempo" in calm[1]
