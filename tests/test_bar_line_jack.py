"""The bar line through real JACK ports: `lofi-live run` at 90 BPM on its internal clock, no metronome.

A player starts at an arbitrary moment of the engine's grid and plays a two-bar loop of four held chords
(two beats each) twice, then stops. Nothing tells the engine where the bar is but the player: its first
chord, snapped to the grid, is beat 1 (as a looper pedal takes it), so after the two silent beats of
``--wait-beats`` the answer starts on the next bar line counted from that chord, not on the step where the
wait ends. The recorded ``.mid`` is read back with mido and shows it.
"""

from __future__ import annotations

import random
import time

import mido
import pytest

from jack_helpers import Player, connect, play_chord_loop, engine_command, engine_ports, unique, wait_for_ports

pytestmark = [pytest.mark.jack, pytest.mark.slow]

BPM = 90
BEAT = 60.0 / BPM
#: Four chords of two beats each: a two-bar loop (C, Am, F, G).
LOOP = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
#: How long each chord is held (seconds): most of its two beats.
HELD = 1.8 * BEAT


def _notes(midi: mido.MidiFile) -> dict[str, list[tuple[float, str]]]:
    """Each track's note-on ("on") and note-off ("off") beats, in order."""
    found: dict[str, list[tuple[float, str]]] = {}
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type in ("note_on", "note_off"):
                kind = "on" if message.type == "note_on" and message.velocity > 0 else "off"
                found.setdefault(track.name, []).append((tick / midi.ticks_per_beat, kind))
    return found


def test_the_answer_starts_on_a_bar_line_counted_from_the_players_first_chord(tmp_path, jack_server):
    import subprocess

    from model_fixtures import build_grid_token_model

    model = build_grid_token_model(tmp_path / "grid")
    record = tmp_path / "bars.mid"
    name = unique("LoFi Bars")
    engine_in, engine_out = engine_ports(name)
    proc = subprocess.Popen(engine_command(model, name, "--bpm", str(BPM), "--record", str(record), "--wait-beats", "2",
                                           "--response-bars", "2", "--seed", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player = Player(jack_server)
    try:
        wait_for_ports([engine_in, engine_out], proc=proc)
        connect(player.jack_name, engine_in)
        # an arbitrary moment: anywhere in a bar, off the grid
        time.sleep(0.5 + random.Random().uniform(0.0, 4 * BEAT))
        play_chord_loop(player, LOOP, 2 * BEAT, HELD)
        time.sleep(2 * BEAT + 4 * BEAT + 2 * 4 * BEAT + 1.0)  # the wait, up to a bar to the bar line, the answer
        proc.send_signal(2)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        print(f"\n{out.strip()}")
    finally:
        player.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    notes = _notes(mido.MidiFile(record))
    player_beats = sorted(beat for beat, kind in notes["player"] if kind == "on")
    model_beats = sorted(beat for beat, kind in notes.get("model", []) if kind == "on")
    # the first chord is recorded (a loaded dummy JACK server may drop a later event now and then)
    assert len(player_beats) >= 2 * len(LOOP) * 3 - 6 and player_beats[2] - player_beats[0] < 0.05, player_beats
    first = round(player_beats[0] * 2) / 2  # the first chord, snapped to the half-beat grid: beat 1
    last_off = max(beat for beat, kind in notes["player"] if kind == "off")
    assert model_beats, (err, out[-2000:], notes["player"])
    answer = model_beats[0]
    print(f"first chord at beat {player_beats[0]:.3f} (grid {first}), last release {last_off:.2f}, "
          f"answer at beat {answer:.3f}: {(answer - first) / 4:.3f} bars from the first chord")
    assert answer >= last_off + 2 - 0.01  # after the wait
    bars = (answer - first) / 4
    assert abs(bars - round(bars)) < 0.02, (first, answer)  # on a bar line counted from the first chord
    assert answer - (last_off + 2) < 4 + 0.5 + 0.01  # the first bar line after the wait, not a later one
