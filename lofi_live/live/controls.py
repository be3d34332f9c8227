"""MIDI control: the TOML config file, control-change (CC) mapping, and ``--learn``.

The config (``--config FILE``, default :func:`default_config_path`) is documented in
``docs/CONFIG.md``; ``examples/config.toml`` is a complete example. It holds defaults for
``lofi-live run`` options in ``[run]``, CC numbers in ``[cc]`` and optional knob ranges in
``[ranges]``. Anything the loader does not know is refused with a one-line :class:`LofiError`
naming the file, the line and the key, so a typo never passes silently.

:class:`ControlMap` turns incoming ``control_change`` messages into :class:`Action` values the
engine applies:

==============  =====================================================  ==========================
action          CC value -> Action.value                               when
==============  =====================================================  ==========================
temperature     0..127 -> 0.1..2.0 (float, ``[ranges]`` may narrow)    every value
tempo           0..127 -> 60..180 BPM (float, ``[ranges]``)            every value
swing           0..127 -> 50..75 % (float, ``[ranges]``)               every value
variation       0..127 -> 0..1 (float, ``[ranges]``)                   every value
response_bars   0..127 -> 1..16 (int, ``[ranges]``)                    when the number changes
model_select    0..127 -> model index 0..n_models-1 (int)              when the index changes
mode            ``"continue"`` / ``"accompany"`` (toggles)             value crosses up to >= 64
key_lock        ``True`` / ``False`` (toggles)                         value crosses up to >= 64
panic, mutate,  ``None``                                               value crosses up to >= 64
loop
==============  =====================================================  ==========================

"Crosses up" means the previous value of that CC was below 64 (or there was none), so a button
fires once per press however many messages it sends. ``state_cc`` is the CC the engine *sends*
its state on (:data:`STATE_VALUES`); it may not share a number with an input action, so the
engine's own state messages coming back through a feedback loop can never trigger anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import mido

from lofi_live.live.conductor import MODES
from lofi_live.live.toml_lines import where_in
from lofi_live.errors import LofiError
from lofi_live.model.loader import PROVIDERS
from lofi_live.tokens.rules import MAX_BPM, MIN_BPM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Actions that can be mapped to an incoming CC, in the order ``--learn`` asks for them.
ACTIONS = ("temperature", "tempo", "mode", "response_bars", "panic", "mutate", "loop", "model_select", "key_lock", "swing",
           "variation")
#: Actions that fire once when the CC value crosses up to 64 or more.
TRIGGERS = ("panic", "mutate", "loop")
#: Actions that flip a setting once when the CC value crosses up to 64 or more.
TOGGLES = ("mode", "key_lock")
#: Value the engine sends on ``state_cc`` for each state.
STATE_VALUES = {"idle": 0, "listening": 64, "responding": 127}
#: Default and widest ranges of the continuous actions.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {"temperature": (0.1, 2.0), "tempo": (60.0, 180.0), "response_bars": (1, 16),
                                                  "swing": (50.0, 75.0), "variation": (0.0, 1.0)}
LIMITS: dict[str, tuple[float, float]] = {"temperature": (0.1, 2.0), "tempo": (MIN_BPM, MAX_BPM), "response_bars": (1, 64),
                                          "swing": (50.0, 75.0), "variation": (0.0, 1.0)}
#: ``[run]`` keys: defaults of ``lofi-live run`` options (option name without ``--``, dashes as
#: underscores) -> accepted Python types, plus a check.
RUN_KEYS: dict[str, tuple[tuple[type, ...], Callable[[Any], str | None] | None]] = {}
#: Switch between edges: a value at or above this is "pressed".
EDGE = 64


def _range(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be in {low:g}..{high:g}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)


def _metronome(value: Any) -> str | None:
    if isinstance(value, bool) or 1 <= value <= 16:
        return None
    return "must be true, false or a MIDI channel 1..16"


# The options of ``lofi-live run`` (lofi_live/commands/run.py); keep in step with it and docs/CONFIG.md.
RUN_KEYS.update({
    "model": ((str, list), lambda v: None if isinstance(v, str) or (v and all(isinstance(m, str) for m in v))
              else "must be a model name or a non-empty list of them"),
    "provider": ((str,), _one_of(*PROVIDERS)),
    "temperature": ((int, float), _range(0, 10)),
    "variation": ((int, float), _range(0, 1)),
    "follow": ((str,), _one_of("chord", "off")),
    "top_k": ((int,), _range(0, 1_000_000)),
    "seed": ((int,), None),
    "key": ((str,), None),
    "scale": ((str,), None),
    "seed_midi": ((str,), None),
    "in": ((str,), None),
    "out": ((str,), None),
    "backend": ((str,), _one_of("alsa", "jack", "coremidi", "winmm")),
    "name": ((str,), None),
    "in_channel": ((int,), _range(1, 16)),
    "out_channel": ((int,), _range(1, 16)),
    "thru": ((bool,), None),
    "metronome": ((bool, int), _metronome),
    "echo_ms": ((int, float), _range(0, 1000)),
    "bpm": ((int, float), _range(MIN_BPM, MAX_BPM)),
    "clock": ((str,), _one_of("internal", "midi")),
    "mode": ((str,), _one_of(*MODES)),
    "wait_beats": ((int, float), _range(0.5, 64)),
    "release_ms": ((int, float), _range(1, 60000)),
    "response_bars": ((int, float), _range(0.25, 64)),
    "gate": ((int, float), _range(0.01, 64)),
    "velocity": ((int,), _range(1, 127)),
    "swing": ((int, float), _range(50, 75)),
    "humanize": ((bool,), None),
    "offset_ms": ((int, float), _range(-1000, 1000)),
    "max_note_beats": ((int, float), _range(0.5, 256)),
    "lost_key_bars": ((int, float), _range(0.25, 1024)),
    "quiet": ((bool,), None),
})
CC_KEYS = ACTIONS + ("state_cc", "channel")
TABLES = ("run", "cc", "ranges")


@dataclass
class Action:
    """Something the engine should do because a mapped CC moved."""

    kind: str
    value: float | int | str | None = None


@dataclass
class Config:
    """A loaded config: ``run`` option defaults, the CC mapping and the knob ranges."""

    path: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    cc: dict[str, int] = field(default_factory=dict)  # action -> CC number (state_cc included)
    channel: int | None = None  # 1..16: listen for CCs on this channel only; None: any channel
    ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANGES))

    def control_map(self, mode: str | None = None, key_lock: bool | None = None, n_models: int = 1) -> "ControlMap":
        """A :class:`ControlMap` for this config; toggles start from ``[run]`` unless given."""
        return ControlMap(
            {k: v for k, v in self.cc.items() if k != "state_cc"}, state_cc=self.cc.get("state_cc"),
            channel=self.channel, ranges=self.ranges, n_models=n_models,
            mode=mode or self.run.get("mode", "continue"),
            key_lock=bool(self.run.get("key")) if key_lock is None else key_lock,
        )


# ---------------------------------------------------------------------------------------------
# Loading


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/lofi-live/config.toml``, i.e. ``~/.config/lofi-live/config.toml`` by default
    (on Windows without ``XDG_CONFIG_HOME``: ``%APPDATA%\\lofi-live\\config.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or (os.environ.get("APPDATA") if os.name == "nt" else None)
    return Path(base or Path.home() / ".config") / "lofi-live" / "config.toml"


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and check a config file.

    ``path`` None: the default location, and no file there is no error (all defaults). A given
    path that does not exist, invalid TOML, an unknown table or key, a wrong type or a value out of
    range is a :class:`LofiError` naming the file, line and key.
    """
    explicit = path is not None
    file = Path(path) if explicit else default_config_path()
    if not file.exists():
        if explicit:
            raise LofiError(f"{file}: no such config file")
        return Config()
    if file.is_dir():
        raise LofiError(f"{file}: is a folder, not a config file")
    try:
        text = file.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except OSError as error:
        raise LofiError(f"{file}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise LofiError(f"{file}: not a TOML config file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "invalid TOML"
        where = f" line {found.group(1)}, column {found.group(2)}" if found else ""
        raise LofiError(f"{file}{where}: invalid TOML: {reason}") from None
    return parse_config(data, file, text)


def parse_config(data: Mapping[str, Any], path: Path | None = None, text: str = "") -> Config:
    """Check a parsed TOML document and build a :class:`Config`."""
    path = path or Path("<config>")
    config = Config(path=path)
    for table, content in data.items():
        if table not in TABLES:
            raise LofiError(f"{where_in(path, text, None, table)} is not a known table (use [run], [cc], [ranges])")
        if not isinstance(content, dict):
            raise LofiError(f"{where_in(path, text, None, table)} must be a table like [{table}]")
    for key, value in data.get("run", {}).items():
        if key not in RUN_KEYS:
            hint = " (write option names with underscores, e.g. in_channel)" if "-" in key else ""
            raise LofiError(f"{where_in(path, text, 'run', key)} is not a lofi-live run option{hint}")
        types, check = RUN_KEYS[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        problem = None if ok else "has the wrong type (" + " or ".join(t.__name__ for t in types) + " expected)"
        if ok and check is not None:
            problem = check(value)
        if problem:
            raise LofiError(f"{where_in(path, text, 'run', key)} {problem}, not {value!r}")
        config.run[key] = value
    used: dict[int, str] = {}
    for key, value in data.get("cc", {}).items():
        if key not in CC_KEYS:
            raise LofiError(f"{where_in(path, text, 'cc', key)} is not a known action (known: {', '.join(CC_KEYS)})")
        low, high = (1, 16) if key == "channel" else (0, 127)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LofiError(f"{where_in(path, text, 'cc', key)} must be "
                            f"{'a MIDI channel 1..16' if key == 'channel' else 'a CC number 0..127'}, not {value!r}")
        if key == "channel":
            config.channel = value
            continue
        if value >= 120:
            raise LofiError(f"{where_in(path, text, 'cc', key)}: CC {value} is a channel mode message (120..127); choose 0..119")
        if value in used:
            raise LofiError(f"{where_in(path, text, 'cc', key)}: CC {value} is already used by cc.{used[value]}")
        used[value] = key
        config.cc[key] = value
    for key, value in data.get("ranges", {}).items():
        if key not in DEFAULT_RANGES:
            raise LofiError(f"{where_in(path, text, 'ranges', key)} is not a knob with a range (known: {', '.join(DEFAULT_RANGES)})")
        low_limit, high_limit = LIMITS[key]
        if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or not all(math.isfinite(v) for v in value) or not low_limit <= min(value) <= max(value) <= high_limit):
            raise LofiError(f"{where_in(path, text, 'ranges', key)} must be [low, high] within {low_limit:g}..{high_limit:g}, not {value!r}")
        config.ranges[key] = (value[0], value[1])
    return config


# ---------------------------------------------------------------------------------------------
# CC -> actions


class ControlMap:
    """Maps incoming CC messages to :class:`Action` lists; see the module docstring for the rules.

    ``cc``: action -> CC number. ``channel``: 1..16 to listen on one channel only. ``mode`` and
    ``key_lock``: where the toggles start (set :attr:`mode`/:attr:`key_lock` when the engine
    changes them another way, so the next toggle flips from the right state).
    """

    def __init__(self, cc: Mapping[str, int], state_cc: int | None = None, channel: int | None = None,
                 ranges: Mapping[str, tuple[float, float]] | None = None, n_models: int = 1,
                 mode: str = "continue", key_lock: bool = False) -> None:
        unknown = set(cc) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown actions: {sorted(unknown)}")
        self.cc = dict(cc)
        self.state_cc = state_cc
        self.channel = channel
        self.ranges = dict(DEFAULT_RANGES, **(ranges or {}))
        self.n_models = max(1, int(n_models))
        self.mode = mode if mode in MODES else "continue"
        self.key_lock = bool(key_lock)
        self._by_number: dict[int, str] = {number: action for action, number in self.cc.items()}
        self._previous: dict[int, int] = {}
        self._last_step: dict[str, int] = {}

    def as_dict(self) -> dict[str, int]:
        """action -> CC number, ``state_cc`` included when set (for the live view)."""
        mapping = dict(self.cc)
        if self.state_cc is not None:
            mapping["state_cc"] = self.state_cc
        return mapping

    def state_message(self, state: str, channel: int = 0) -> mido.Message | None:
        """The CC message announcing ``state`` (idle/listening/responding), None without ``state_cc``."""
        if self.state_cc is None or state not in STATE_VALUES:
            return None
        return mido.Message("control_change", control=self.state_cc, value=STATE_VALUES[state], channel=channel)

    def _scale(self, action: str, value: int) -> float:
        low, high = self.ranges[action]
        return low + (high - low) * value / 127

    def handle(self, message: mido.Message) -> list[Action]:
        """The actions one message triggers (none for anything but a mapped control change)."""
        if getattr(message, "type", None) != "control_change":
            return []
        if self.channel is not None and message.channel != self.channel - 1:
            return []
        action = self._by_number.get(message.control)
        if action is None:
            return []
        value = int(message.value)
        previous = self._previous.get(message.control, 0)
        self._previous[message.control] = value
        rising = value >= EDGE and previous < EDGE
        if action in ("temperature", "tempo", "swing", "variation"):
            return [Action(action, round(self._scale(action, value), 4))]
        if action == "response_bars":
            return self._stepped(action, int(round(self._scale(action, value))))
        if action == "model_select":
            return self._stepped(action, min(self.n_models - 1, value * self.n_models // 128))
        if not rising:
            return []
        if action == "mode":
            self.mode = "accompany" if self.mode == "continue" else "continue"
            return [Action("mode", self.mode)]
        if action == "key_lock":
            self.key_lock = not self.key_lock
            return [Action("key_lock", self.key_lock)]
        return [Action(action, None)]

    def _stepped(self, action: str, value: int) -> list[Action]:
        if self._last_step.get(action) == value:
            return []
        self._last_step[action] = value
        return [Action(action, value)]


# ---------------------------------------------------------------------------------------------
# --learn and saving


def learn(receive: Callable[[float], mido.Message | None], actions: list[str], ask: Callable[[str], None],
          timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> dict[str, int]:
    """Map ``actions`` to CC numbers interactively, one at a time.

    For each action ``ask("move the knob for temperature...")`` tells the musician what to do,
    then ``receive(seconds_left)`` is polled (it returns a message, or None when nothing came in
    that time) until a control change arrives on a CC not mapped yet (a knob sends a stream of
    values: the rest of the stream is ignored), or ``timeout`` seconds pass and the action is
    skipped. CCs 120..127 (channel mode messages) are never taken. Returns action -> CC number.
    """
    mapping: dict[str, int] = {}
    for action in actions:
        verb = "press the button" if action in TRIGGERS or action in TOGGLES else "move the knob"
        ask(f"{verb} for {action}... ({timeout:g} s, or wait to skip)")
        deadline = clock() + timeout
        while True:
            left = deadline - clock()
            if left <= 0:
                ask(f"no CC for {action}: skipped")
                break
            message = receive(left)
            if message is None or getattr(message, "type", None) != "control_change":
                continue
            if message.control in mapping.values() or message.control >= 120:
                continue
            mapping[action] = message.control
            ask(f"{action} -> CC {message.control}")
            break
    return mapping


def _toml_value(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def save_config(path: str | os.PathLike, cc: Mapping[str, int] | None = None, run: Mapping[str, Any] | None = None,
                ranges: Mapping[str, tuple[float, float]] | None = None, channel: int | None = None) -> Path:
    """Write a config file (atomically), keeping what an existing file has that is not given here.

    ``cc`` entries replace or add to the file's ``[cc]``; likewise ``run`` and ``ranges``. The
    result is checked with :func:`parse_config` before it is written, so a bad value never lands
    in the file. Comments of an existing file are not kept.
    """
    target = Path(path)
    existing = load_config(target) if target.exists() else Config(path=target)
    merged_run = dict(existing.run, **(run or {}))
    merged_cc = dict(existing.cc, **(cc or {}))
    changed_numbers = set((cc or {}).values())
    merged_cc = {k: v for k, v in merged_cc.items() if k in (cc or {}) or v not in changed_numbers}
    merged_ranges = {k: v for k, v in existing.ranges.items() if DEFAULT_RANGES.get(k) != tuple(v)}
    merged_ranges.update(ranges or {})
    document: dict[str, dict[str, Any]] = {"run": merged_run} if merged_run else {}
    cc_table: dict[str, Any] = {}
    if channel is not None or existing.channel is not None:
        cc_table["channel"] = channel if channel is not None else existing.channel
    cc_table.update(merged_cc)
    if cc_table:
        document["cc"] = cc_table
    if merged_ranges:
        document["ranges"] = {k: list(v) for k, v in merged_ranges.items()}
    lines = ["# lofi-live config (docs/CONFIG.md); written by lofi-live"]
    for table, content in document.items():
        lines += ["", f"[{table}]"]
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in content.items())
    text = "\n".join(lines) + "\n"
    parse_config(tomllib.loads(text), target, text)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as error:
        raise LofiError(f"{target}: cannot write the config ({error.strerror or error})") from None
    return target
