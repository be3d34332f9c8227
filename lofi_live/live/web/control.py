"""``POST /api/control``: a name and a value, checked as a mapped CC's action is, into an :class:`Action`.

The names are the actions a CC mapping can drive (:data:`lofi_live.live.controls.ACTIONS`) and the
values those a mapped knob or button can produce: a knob's value lies in the mapping's range
(``[ranges]`` in the config, else :data:`lofi_live.live.controls.DEFAULT_RANGES`), a toggle takes the
state it flips to, a trigger takes none. An action added there with a range (``variation``) is a knob
here with no change. Anything else is refused with a one-line reason, before the engine sees it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from lofi_live.live.conductor import MODES
from lofi_live.live.controls import ACTIONS, DEFAULT_RANGES, TRIGGERS, Action

#: Knobs whose value is a whole number (the others are floats).
WHOLE = ("response_bars", "model_select")


class BadControl(ValueError):
    """A control the surface refuses (unknown name, bad value): the one-line reason."""


def _number(name: str, value: Any, low: float, high: float, whole: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadControl(f"{name}: value must be a number in {low:g}..{high:g}, not {value!r}")
    if whole and value != int(value):
        raise BadControl(f"{name}: value must be a whole number in {low:g}..{high:g}, not {value!r}")
    if not low <= value <= high:
        raise BadControl(f"{name}: value {value:g} is outside {low:g}..{high:g}")
    return int(value) if whole else float(value)


def knob_ranges(ranges: Mapping[str, tuple[float, float]] | None, n_models: int) -> dict[str, tuple[float, float]]:
    """The range of every knob: the mapping's, and model_select over the models loaded."""
    found = dict(DEFAULT_RANGES, **(ranges or {}))
    found["model_select"] = (0, max(1, n_models) - 1)
    return found


def action_of(body: Any, ranges: Mapping[str, tuple[float, float]]) -> Action:
    """The :class:`Action` a request body ``{"name": ..., "value": ...}`` asks for; :class:`BadControl` if none."""
    if not isinstance(body, dict) or set(body) - {"name", "value"} or "name" not in body:
        raise BadControl('the body must be a JSON object {"name": ..., "value": ...}')
    name, value = body["name"], body.get("value")
    if not isinstance(name, str) or name not in ACTIONS:
        raise BadControl(f"unknown control {str(name)[:40]!r} (known: {', '.join(ACTIONS)})")
    if name in TRIGGERS:
        if value is not None:
            raise BadControl(f"{name}: a button takes no value (null)")
        return Action(name, None)
    if name == "mode":
        if value not in MODES:
            raise BadControl(f"mode: value must be one of {', '.join(MODES)}")
        return Action(name, value)
    if name == "key_lock":
        if not isinstance(value, bool):
            raise BadControl("key_lock: value must be true or false")
        return Action(name, value)
    if name in ranges:
        low, high = ranges[name]
        return Action(name, _number(name, value, low, high, name in WHOLE))
    raise BadControl(f"{name}: not available on the web surface")


def spec(ranges: Mapping[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """What the page builds its controls from: each action's kind and, for a knob, its range."""
    out = []
    for name in ACTIONS:
        if name in TRIGGERS:
            out.append({"name": name, "kind": "button"})
        elif name == "mode":
            out.append({"name": name, "kind": "choice", "choices": list(MODES)})
        elif name == "key_lock":
            out.append({"name": name, "kind": "toggle"})
        elif name in ranges:
            low, high = ranges[name]
            out.append({"name": name, "kind": "knob", "min": low, "max": high, "whole": name in WHOLE})
    return out
