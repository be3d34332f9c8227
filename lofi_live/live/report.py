"""What the engine tells the outside: the view's immutable snapshot and the figures of a whole run.

Both are read from the engine's state by the engine thread (the snapshot, at every boundary and
every 50 ms between) or once it has stopped (the figures, for the line ``lofi-live run`` prints at
exit), so nothing here races the engine.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Sequence

from lofi_live.live.view import EngineStatus

if TYPE_CHECKING:
    from lofi_live.live.engine import Engine


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by the nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


def status_of(engine: Engine) -> EngineStatus:
    """The view's snapshot of ``engine`` now."""
    latencies = sorted(engine.lookahead.recent_latencies)
    controls = engine.controls
    conductor = engine.conductor
    return EngineStatus(
        clock=engine.clock.source,
        bpm=engine.clock.bpm,
        running=engine.clock.running and not engine._ended,
        mode=conductor.mode,
        state=engine.state,
        key=engine.keylock.shown,
        provider=getattr(engine.model, "provider", "cpu"),
        model=getattr(engine.model, "name", ""),
        response_bars=engine.config.response_bars,
        loop=conductor.replay is not None and conductor.replay.kind == "loop",
        temperature=engine.temperature,
        step_latency_ms=statistics.median(latencies) * 1e3 if latencies else 0.0,
        step_latency_p99_ms=percentile(latencies, 99) * 1e3,
        step=max(engine.step, 0),
        late_steps=engine.lookahead.late_steps,
        recent=tuple(engine.recent),
        last_tokens=tuple(engine.timeline.tokens(last=8)),
        cc_map=tuple(controls.as_dict().items()) if hasattr(controls, "as_dict") else (),
        notice=engine.outages.shown(engine._published),
    )


def stats_of(engine: Engine) -> dict[str, float]:
    """Figures of the whole run: steps, inference latency, send error against the grid, input."""
    latencies = list(engine.lookahead.latencies)
    errors = list(engine.emission_errors)
    return {
        "steps": engine.step + 1,
        "played_steps": engine.played_steps,
        "late_steps": engine.lookahead.late_steps,
        "latency_median_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "emission_median_ms": statistics.median(errors) * 1e3 if errors else 0.0,
        "emission_p99_ms": percentile(errors, 99) * 1e3,
        "echoes_ignored": engine.intake.guard.ignored,
        "messages_in": engine.intake.messages_in,
        # --clock midi: ticks delivered twice and ticks lost on the way in (lofi_live.timing.tick_follower)
        "clock_duplicates": getattr(engine.clock, "duplicates", 0),
        "clock_lost": getattr(engine.clock, "lost", 0),
    }
