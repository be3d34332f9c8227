"""The shipped default model listens to a loop, through real JACK ports (issue "Listen to the loop").

`lofi-live run` with no `--model` (the shipped `lofi`), internal clock at 90 BPM, no metronome: a player starts
at an arbitrary moment, plays a two-bar loop of four held chords twice, then stops. The recorded `.mid`, read
back with mido, shows the answer:

* it starts on a bar line counted from the player's first chord;
* its onsets fall where the loop's chords changed (every two beats of the loop's cycle);
* at least 85 % of its notes belong to the loop's chord at that point of the cycle.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import mido
import pytest

from jack_helpers import Player, connect, play_chord_loop, engine_ports, unique, wait_for_ports

pytestmark = [pytest.mark.jack, pytest.mark.slow]

BPM = 90
BEAT = 60.0 / BPM
#: Four chords of two beats each: a two-bar loop (Cmaj7, Am7, Fmaj7, G7), voiced as a player would.
LOOP = [(48, 59, 64, 67), (45, 55, 60, 64), (41, 57, 60, 64), (43, 53, 59, 62)]
CHORD_BEATS = 2.0
CYCLE_BEATS = CHORD_BEATS * len(LOOP)
HELD = 1.8 * BEAT


def _track_notes(midi: mido.MidiFile, name: str) -> list[tuple[float, int]]:
    """(beat, pitch) of every note-on of the track called ``name``."""
    found: list[tuple[float, int]] = []
    for track in midi.tracks:
        if track.name != name:
            continue
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                found.append((tick / midi.ticks_per_beat, message.note))
    return sorted(found)


def test_the_default_model_answers_a_loop_on_its_bar_line_its_chord_changes_and_its_chords(tmp_path, jack_server):
    record = tmp_path / "listen.mid"
    name = unique("LoFi Listen")
    engine_in, engine_out = engine_ports(name)
    command = [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--name", name, "--bpm", str(BPM),
               "--record", str(record), "--wait-beats", "2", "--response-bars", "4", "--seed", "3"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player = Player(jack_server)
    try:
        wait_for_ports([engine_in, engine_out], proc=proc, timeout=60)
        connect(player.jack_name, engine_in)
        time.sleep(0.5 + random.Random().uniform(0.0, 4 * BEAT))  # an arbitrary moment of the engine's grid
        play_chord_loop(player, LOOP, CHORD_BEATS * BEAT, HELD)
        time.sleep((2 + 4 + 4 * 4) * BEAT + 1.0)  # the wait, up to a bar to the bar line, four bars of answer
        proc.send_signal(2)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        player.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    midi = mido.MidiFile(record)
    heard = _track_notes(midi, "player")
    answer = _track_notes(midi, "model")
    assert len(heard) >= 2 * 4 * len(LOOP) - 4, heard  # a loaded dummy JACK server may drop an event now and then
    assert answer, (err, out[-2000:])
    first = round(heard[0][0] * 2) / 2  # the player's first chord, snapped to the grid: beat 1 of a bar
    bars = (answer[0][0] - first) / 4
    assert abs(bars - round(bars)) < 0.02, (first, answer[0])  # the answer starts on a bar line

    def cycle_beat(beat: float) -> float:
        return (beat - first) % CYCLE_BEATS

    onsets = sorted({round(beat * 2) / 2 for beat, _ in answer})
    on_changes = sum(1 for beat in onsets if min(cycle_beat(beat) % CHORD_BEATS,
                                                 CHORD_BEATS - cycle_beat(beat) % CHORD_BEATS) < 0.26)
    in_chord = sum(1 for beat, pitch in answer
                   if pitch % 12 in {p % 12 for p in LOOP[int(cycle_beat(beat) // CHORD_BEATS) % len(LOOP)]})
    print(f"\nanswer from beat {answer[0][0]:.2f} ({bars:.2f} bars after the first chord): {len(answer)} notes, "
          f"{in_chord / len(answer):.0%} in the loop's chord there, {on_changes} of {len(onsets)} onsets on a change")
    assert in_chord >= 0.85 * len(answer), [(beat, pitch, LOOP[int(cycle_beat(beat) // CHORD_BEATS) % len(LOOP)])
                                             for beat, pitch in answer]
    assert on_changes >= 0.75 * len(onsets), onsets
