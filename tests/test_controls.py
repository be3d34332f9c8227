"""MIDI control: the TOML config, CC -> actions, --learn and saving."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofi_live.live.controls import (
    ACTIONS, Action, ControlMap, default_config_path, learn, load_config, save_config,
)
from lofi_live.errors import LofiError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "config.toml"


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel)


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert set(config.cc) == set(ACTIONS) | {"state_cc"}
    assert config.run["bpm"] == 84 and config.run["mode"] == "continue"
    assert config.ranges["tempo"] == (70, 110)
    mapping = config.control_map(n_models=2)
    assert mapping.as_dict() == config.cc


def test_default_location_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "lofi-live" / "config.toml"
    assert load_config().cc == {}  # no file at the default place: all defaults, no error
    (tmp_path / "lofi-live").mkdir()
    (tmp_path / "lofi-live" / "config.toml").write_text("[cc]\npanic = 99\n")
    assert load_config().cc == {"panic": 99}
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_config_path() == Path.home() / ".config" / "lofi-live" / "config.toml"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[run]\nbpm = 90\nfoo = 1\n", "line 3: 'run.foo' is not a lofi-live run option"),
        ("[run]\nin-channel = 2\n", "line 2: 'run.in-channel' is not a lofi-live run option (write option names with underscores"),
        ("[cc]\ntemperature = 21\n\n[cc2]\nx = 1\n", "line 4: 'cc2' is not a known table"),
        ("[cc]\ntemprature = 21\n", "line 2: 'cc.temprature' is not a known action"),
        ("[cc]\ntemperature = 21\npanic = 21\n", "line 3: 'cc.panic': CC 21 is already used by cc.temperature"),
        ("[cc]\npanic = 21\nstate_cc = 21\n", "line 3: 'cc.state_cc': CC 21 is already used by cc.panic"),
        ("[cc]\npanic = 123\n", "line 2: 'cc.panic': CC 123 is a channel mode message"),
        ("[cc]\npanic = 200\n", "line 2: 'cc.panic' must be a CC number 0..127, not 200"),
        ("[cc]\npanic = true\n", "line 2: 'cc.panic' must be a CC number"),
        ("[cc]\nchannel = 0\n", "line 2: 'cc.channel' must be a MIDI channel 1..16"),
        ("[run]\nbpm = 5000\n", "line 2: 'run.bpm' must be in 20..400"),
        ("[run]\nmetronome = 17\n", "line 2: 'run.metronome' must be true, false or a MIDI channel 1..16"),
        ("[run]\nmode = \"solo\"\n", "line 2: 'run.mode' must be one of 'continue', 'accompany'"),
        ("[run]\nthru = 1\n", "line 2: 'run.thru' has the wrong type (bool expected)"),
        ("[run]\ntemperature = \"hot\"\n", "'run.temperature' has the wrong type"),
        ("[ranges]\ntempo = [10, 500]\n", "line 2: 'ranges.tempo' must be [low, high] within 20..400"),
        ("[ranges]\nvolume = [1, 2]\n", "line 2: 'ranges.volume' is not a knob with a range"),
        ("[run]\nbpm = \n", "line 2, column 7: invalid TOML"),
        ("[run\n", "line 1, column 5: invalid TOML"),
        ("run = 3\n", "line 1: 'run' must be a table like [run]"),
    ],
)
def test_bad_configs_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(LofiError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path)), caught.value
    assert message in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


def test_missing_or_binary_config(tmp_path: Path) -> None:
    with pytest.raises(LofiError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LofiError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")


def test_continuous_knobs_map_0_127_onto_their_ranges() -> None:
    mapping = ControlMap({"temperature": 21, "tempo": 22, "response_bars": 23}, ranges={"tempo": (70.0, 110.0)})
    assert mapping.handle(cc(21, 0)) == [Action("temperature", 0.1)]
    assert mapping.handle(cc(21, 127)) == [Action("temperature", 2.0)]
    middle = mapping.handle(cc(21, 64))[0].value
    assert 1.0 < middle < 1.1
    assert mapping.handle(cc(22, 0)) == [Action("tempo", 70.0)]
    assert mapping.handle(cc(22, 127)) == [Action("tempo", 110.0)]
    assert mapping.handle(cc(23, 0)) == [Action("response_bars", 1)]
    assert mapping.handle(cc(23, 1)) == []  # still 1 bar: nothing new to do
    assert mapping.handle(cc(23, 127)) == [Action("response_bars", 16)]


@given(st.integers(0, 127))
def test_temperature_is_always_in_range(value: int) -> None:
    action = ControlMap({"temperature": 1}).handle(cc(1, value))[0]
    assert 0.1 <= action.value <= 2.0


def test_buttons_fire_once_per_press() -> None:
    mapping = ControlMap({"panic": 27, "mutate": 28, "loop": 29})
    presses = [mapping.handle(cc(27, v)) for v in (127, 127, 100, 0, 63, 64, 0)]
    assert presses == [[Action("panic")], [], [], [], [], [Action("panic")], []]
    assert mapping.handle(cc(28, 127)) == [Action("mutate")]
    assert mapping.handle(cc(29, 90)) == [Action("loop")]


def test_toggles_flip_mode_and_key_lock() -> None:
    mapping = ControlMap({"mode": 25, "key_lock": 26}, mode="continue", key_lock=False)
    assert mapping.handle(cc(25, 127)) == [Action("mode", "accompany")]
    assert mapping.handle(cc(25, 0)) == []
    assert mapping.handle(cc(25, 127)) == [Action("mode", "continue")]
    assert mapping.handle(cc(26, 127)) == [Action("key_lock", True)]
    mapping.handle(cc(26, 0))
    assert mapping.handle(cc(26, 127)) == [Action("key_lock", False)]


def test_model_select_splits_the_knob_among_models() -> None:
    mapping = ControlMap({"model_select": 24}, n_models=3)
    seen = [a.value for v in range(128) for a in mapping.handle(cc(24, v))]
    assert seen == [0, 1, 2]


def test_channel_filter_other_messages_and_state_cc() -> None:
    mapping = ControlMap({"panic": 27}, state_cc=30, channel=2)
    assert mapping.handle(cc(27, 127, channel=0)) == []
    assert mapping.handle(cc(27, 127, channel=1)) == [Action("panic")]
    assert mapping.handle(mido.Message("note_on", note=27, velocity=127)) == []
    assert mapping.handle(mido.Message("clock")) == []
    assert mapping.handle(cc(30, 127, channel=1)) == []  # our own state coming back does nothing
    assert mapping.as_dict() == {"panic": 27, "state_cc": 30}
    assert [mapping.state_message(s, channel=3).value for s in ("idle", "listening", "responding")] == [0, 64, 127]
    assert mapping.state_message("idle").control == 30
    assert ControlMap({}).state_message("idle") is None


def _receiver(script: list[tuple[float, mido.Message | None]]):
    """A receive(timeout) over a scripted timeline, with the clock it advances (no sleeping)."""
    now = [0.0]
    queue = list(script)

    def clock() -> float:
        return now[0]

    def receive(timeout: float) -> mido.Message | None:
        if queue and queue[0][0] <= now[0] + timeout:
            at, message = queue.pop(0)
            now[0] = max(now[0], at)
            return message
        now[0] += timeout
        return None

    return receive, clock


def test_learn_maps_knobs_ignores_the_rest_of_a_stream_and_skips_on_timeout() -> None:
    receive, clock = _receiver([
        (0.5, mido.Message("clock")),  # DAW clock while learning: ignored
        (1.0, cc(21, 10)), (1.1, cc(21, 11)), (1.2, cc(21, 12)),  # temperature knob, still moving...
        (2.0, cc(21, 13)), (2.5, cc(27, 127)),  # ...then the panic button
        (15.0, cc(28, 127)),  # after mutate timed out (2.5 + 10 s): this lands on loop
    ])
    said: list[str] = []
    mapping = learn(receive, ["temperature", "panic", "mutate", "loop"], said.append, timeout=10.0, clock=clock)
    assert mapping == {"temperature": 21, "panic": 27, "loop": 28}
    assert said[0].startswith("move the knob for temperature")
    assert any(line.startswith("press the button for panic") for line in said)
    assert "no CC for mutate: skipped" in said


def test_save_config_round_trips_and_keeps_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "config.toml"
    save_config(path, cc={"temperature": 21, "panic": 27}, run={"bpm": 90, "key": "A", "thru": True, "model": "exported_models/lofi"})
    config = load_config(path)
    assert config.cc == {"temperature": 21, "panic": 27}
    assert config.run == {"bpm": 90, "key": "A", "thru": True, "model": "exported_models/lofi"}
    # learning again replaces the CC numbers given and keeps the rest; a re-used number moves
    save_config(path, cc={"temperature": 27, "loop": 30})
    config = load_config(path)
    assert config.cc == {"temperature": 27, "loop": 30}
    assert config.run["bpm"] == 90
    # never writes an invalid file
    with pytest.raises(LofiError):
        save_config(path, cc={"panic": 500})
    assert load_config(path).cc == {"temperature": 27, "loop": 30}


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=30))
def test_saved_strings_survive_toml(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.toml"
    save_config(path, run={"in": name})
    assert tomllib.loads(path.read_text(encoding="utf-8"))["run"]["in"] == name


def test_run_model_may_be_a_list_for_model_select(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[run]\nmodel = ["exported_models/lofi", "exported_models/other"]\n')
    assert load_config(path).run["model"] == ["exported_models/lofi", "exported_models/other"]
    path.write_text("[run]\nmodel = [1, 2]\n")
    with pytest.raises(LofiError, match="run.model"):
        load_config(path)
