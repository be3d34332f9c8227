"""``lofi-train prepare``: the seed's token rules, grid tokens, failures, the cache and the corpus format."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import mido
import pytest

from lofi_live.errors import LofiError
from lofi_live.tokens.rules import onset_token
from midi_factory import random_song, write_onsets
from training.corpus.io import load_corpus, save_corpus
from training.corpus.prepare import prepare

pytest.importorskip("music21")


def lofi_train(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_tokens_follow_the_seed_rules(tmp_path: Path) -> None:
    onsets = [[60], [63], [66], [60, 64, 67], [71, 62, 66], [61], [70], [56, 60, 63]]
    write_onsets(tmp_path / "a.mid", onsets)
    corpus = prepare(tmp_path, workers=1, progress=False, kind="seed")
    assert corpus["tokens"] == "seed" and corpus["rules"].startswith("music21 seed rules")
    tokens = corpus["files"][0]["tokens"]
    assert tokens == ["C4", "E-4", "F#4", "0.4.7", "11.2.6", "C#4", "B-4", "8.0.3"]
    assert tokens == [onset_token(o) for o in onsets]


def test_file_without_instrument_uses_the_same_tokens(tmp_path: Path) -> None:
    onsets = random_song(3, 20)
    write_onsets(tmp_path / "plain.mid", onsets, program=None)
    corpus = prepare(tmp_path, workers=1, progress=False, kind="seed")
    assert corpus["files"][0]["tokens"] == [onset_token(o) for o in onsets]


def test_bad_files_are_listed_and_the_run_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_onsets(data / "good.mid", random_song(1))
    (data / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff\xff\xffgarbage")
    (data / "empty.mid").write_bytes(b"")
    (data / "notes.mid").write_text("these are my notes, not a MIDI file\n")
    (data / "zero_tracks.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x00\x01\xe0")
    out = tmp_path / "c.json"
    result = lofi_train("prepare", str(data), "-o", str(out), "--cache", str(tmp_path / "cache"), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    corpus = load_corpus(out)
    assert [f["path"] for f in corpus["files"]] == ["good.mid"]
    reasons = {f["path"]: f["reason"] for f in corpus["failures"]}
    assert set(reasons) == {"corrupt.mid", "empty.mid", "notes.mid", "zero_tracks.mid"}
    assert "no tracks" in reasons["zero_tracks.mid"]
    assert reasons["empty.mid"] == "empty file"
    assert "no MThd header" in reasons["notes.mid"]
    assert "corrupt" in reasons["corrupt.mid"]
    for name, reason in reasons.items():
        assert f"failed: {name}: {reason}" in result.stdout


@pytest.mark.parametrize("kind", ["seed", "grid"])
def test_rerun_reads_the_cache(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    for i in range(3):
        write_onsets(data / f"sub/{i}.midi", random_song(i, 40))
    cache = tmp_path / "cache"
    first = prepare(data, workers=2, cache_dir=cache, progress=False, kind=kind)
    second = prepare(data, workers=2, cache_dir=cache, progress=False, kind=kind)
    assert first["cached_files"] == 0 and second["cached_files"] == 3
    assert first["files"] == second["files"]
    assert [f["path"] for f in first["files"]] == ["sub/0.midi", "sub/1.midi", "sub/2.midi"]
    assert len(list(cache.rglob("*.json"))) == 3
    for entry in cache.rglob("*.json"):
        entry.write_text("{broken")
    third = prepare(data, workers=1, cache_dir=cache, progress=False, kind=kind)
    assert third["cached_files"] == 0 and third["files"] == first["files"]


def test_cache_keeps_the_tokenizations_apart(tmp_path: Path) -> None:
    """One cache, one file, both tokenizations: each run reads back its own tokens, never the other's."""
    data = tmp_path / "data"
    # a held chord and a silence: the grid tokens differ from the seed tokens
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    for pitch in (60, 64, 67):
        track.append(mido.Message("note_on", note=pitch, velocity=70, time=0))
    track.append(mido.Message("note_off", note=60, time=960))
    track.append(mido.Message("note_off", note=64, time=0))
    track.append(mido.Message("note_off", note=67, time=0))
    track.append(mido.Message("note_on", note=62, velocity=70, time=480))
    track.append(mido.Message("note_off", note=62, time=240))
    data.mkdir()
    midi.save(data / "held.mid")
    cache = tmp_path / "cache"
    expected = {"seed": ["0.4.7", "D4"], "grid": ["0.4.7", "hold", "hold", "hold", "rest", "rest", "D4"]}
    for _ in range(2):
        for kind, tokens in expected.items():
            corpus = prepare(data, workers=1, cache_dir=cache, progress=False, kind=kind)
            assert corpus["tokens"] == kind and corpus["files"][0]["tokens"] == tokens
    assert len(list(cache.rglob("*.json"))) == 2
    assert prepare(data, workers=1, cache_dir=cache, progress=False, kind="grid")["cached_files"] == 1
    # a track filter is part of the grid entry: another filter is another entry
    filtered = prepare(data, workers=1, cache_dir=cache, progress=False, kind="grid", tracks="piano")
    assert filtered["cached_files"] == 0 and filtered["files"] == []
    assert filtered["failures"][0]["reason"] == "no notes outside the drum channel"


def test_prepare_tokens_option_is_recorded(tmp_path: Path) -> None:
    """``prepare --tokens grid`` (the default) and ``--tokens seed`` write the tokenization into the corpus."""
    data = tmp_path / "data"
    write_onsets(data / "a.mid", [[60], [], [], [62, 65, 69]])
    found = {}
    for option in ([], ["--tokens", "grid"], ["--tokens", "seed"]):
        out = tmp_path / f"c{len(found)}.json"
        result = lofi_train("prepare", str(data), "-o", str(out), "--no-cache", "--workers", "1", *option)
        assert result.returncode == 0, result.stderr
        corpus = load_corpus(out)
        found[" ".join(option)] = (corpus["tokens"], corpus["files"][0]["tokens"])
        assert f"{corpus['tokens']} tokens" in result.stdout
    assert found[""] == found["--tokens grid"] == ("grid", ["C4", "rest", "rest", "2.5.9"])
    assert found["--tokens seed"] == ("seed", ["C4", "2.5.9"])


def test_prepare_tracks_reads_only_the_named_tracks(tmp_path: Path) -> None:
    """``--tracks GLOB`` keeps the tracks whose name matches (case-insensitive); seed tokens refuse it."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    for name, pitch in (("MELODY", 72), ("PIANO", 48)):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name)])
        track += [mido.Message("note_on", note=pitch, velocity=70, time=0), mido.Message("note_off", note=pitch, time=240)]
        midi.tracks.append(track)
    (tmp_path / "data").mkdir()
    midi.save(tmp_path / "data" / "song.mid")
    out = tmp_path / "c.json"
    result = lofi_train("prepare", str(tmp_path / "data"), "-o", str(out), "--no-cache", "--tracks", "pia*")
    assert result.returncode == 0, result.stderr
    corpus = load_corpus(out)
    assert corpus["files"][0]["tokens"] == ["C3"] and "tracks named pia*" in corpus["rules"]
    result = lofi_train("prepare", str(tmp_path / "data"), "-o", str(out), "--tokens", "seed", "--tracks", "PIANO")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--tracks" in result.stderr


def test_cache_folder_from_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_onsets(data / "a.mid", random_song(5, 40))
    env_cache = tmp_path / "env-cache"
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "prepare", str(data), "-o", str(tmp_path / "c.json")],
        capture_output=True, text=True, env={**__import__("os").environ, "LOFI_LIVE_CACHE": str(env_cache)},
    )
    assert result.returncode == 0, result.stderr
    assert len(list(env_cache.rglob("*.json"))) == 1


def test_timeout_is_a_listed_failure(tmp_path: Path) -> None:
    write_onsets(tmp_path / "slow.mid", random_song(2, 400))
    corpus = prepare(tmp_path, workers=1, timeout_s=0.001, progress=False)
    assert corpus["files"] == []
    assert corpus["failures"][0]["reason"].startswith("timeout")


def test_sample_is_seeded(tmp_path: Path) -> None:
    for i in range(6):
        write_onsets(tmp_path / f"{i}.mid", random_song(i, 10))
    picks = [[f["path"] for f in prepare(tmp_path, sample=3, seed=s, workers=1, progress=False)["files"]]
             for s in (7, 7, 8)]
    assert len(picks[0]) == 3 and picks[0] == picks[1] and picks[0] == sorted(picks[0])


def test_corpus_round_trip_json_and_gzip(tmp_path: Path) -> None:
    corpus = {"format": 1, "source": "x", "rules": "r", "files": [{"path": "a.mid", "sha256": "0", "tokens": ["C4"]}],
              "failures": []}
    for name in ("c.json", "c.json.gz"):
        save_corpus(corpus, tmp_path / name)
        assert load_corpus(tmp_path / name) == corpus
    assert gzip.decompress((tmp_path / "c.json.gz").read_bytes())


@pytest.mark.parametrize("content, words", [
    (b"{not json", "not a corpus file"),
    (b'{"format": 99, "files": []}', "not a corpus file"),
    (b'{"format": 1, "files": [{"path": "a", "tokens": [1]}]}', "corrupt corpus"),
    (b'{"format": 1, "files": []}', "no tokenized files"),
    (gzip.compress(b"[1, 2"), "not a corpus file"),
])
def test_bad_corpus_files_are_refused(tmp_path: Path, content: bytes, words: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(LofiError, match=words):
        load_corpus(bad)


def test_prepare_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "nomidi").mkdir()
    (tmp_path / "nomidi" / "readme.txt").write_text("hi")
    cases = {
        str(tmp_path / "missing"): "no such folder",
        str(tmp_path / "nomidi"): "no .mid or .midi files",
    }
    for folder, words in cases.items():
        result = lofi_train("prepare", folder, "-o", str(tmp_path / "c.json"))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and folder in lines[0] and words in lines[0], result.stderr


SEED_LOOP = '''
from music21 import converter, instrument, note, chord
notes = []
midi = converter.parse(file)
notes_to_parse = None
try: # file has instrument parts
    s2 = instrument.partitionByInstrument(midi)
    notes_to_parse = s2.parts[0].recurse()
except: # file has notes in a flat structure
    notes_to_parse = midi.flatten().notes
for element in notes_to_parse:
    if isinstance(element, note.Note):
        notes.append(str(element.pitch))
    elif isinstance(element, chord.Chord):
        notes.append('.'.join(str(n) for n in element.normalOrder))
'''


@pytest.mark.slow
@pytest.mark.shared_data
def test_prepare_matches_the_seed_loop_on_shared_piano(shared_data: Path, tmp_path: Path) -> None:
    """The seed's own loop (``midi.flat`` is ``flatten()`` in music21 >= 8), file for file, token for token."""
    folder = shared_data / "piano"
    out = tmp_path / "piano.json"
    result = lofi_train("prepare", str(folder), "-o", str(out), "--cache", str(tmp_path / "cache"), "--tokens", "seed")
    assert result.returncode == 0, result.stderr
    corpus = load_corpus(out)
    ours = {f["path"]: f["tokens"] for f in corpus["files"]}
    ours.update({f["path"]: [] for f in corpus["failures"]})
    files = sorted(folder.glob("*.mid"))
    assert sorted(ours) == sorted(f.name for f in files)
    for file in files:
        scope = {"file": str(file)}
        exec(SEED_LOOP, scope)  # noqa: S102 - the seed's loop, verbatim, as the reference
        assert ours[file.name] == scope["notes"], file.name
    assert sum(len(t) for t in ours.values()) > 40000
    assert json.loads(out.read_text())["format"] == 1


def _strings_then_piano(path: Path) -> Path:
    """Track 1, named "strings": one note on a strings program; track 2: a piano part of 40 notes. music21
    partitions the file into an empty part named after the first track, then the two instruments' parts;
    the seed rules read the first one, so the file gives no token although it holds 41 notes."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    strings = mido.MidiTrack([mido.MetaMessage("track_name", name="strings"),
                              mido.Message("program_change", program=48, channel=0, time=0),
                              mido.Message("note_on", note=60, velocity=64, channel=0, time=0),
                              mido.Message("note_off", note=60, velocity=0, channel=0, time=240)])
    piano = mido.MidiTrack([mido.Message("program_change", program=0, channel=1, time=0)])
    for i in range(40):
        piano.append(mido.Message("note_on", note=60 + i % 12, velocity=64, channel=1, time=0))
        piano.append(mido.Message("note_off", note=60 + i % 12, velocity=0, channel=1, time=240))
    midi.tracks.extend([strings, piano])
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(path)
    return path


def test_a_file_the_seed_rules_read_empty_says_what_it_holds(tmp_path: Path) -> None:
    """The seed rule stays exact, but its failure line counts the file's notes and names the option that
    reads every part; the grid tokens of the same file read both tracks."""
    _strings_then_piano(tmp_path / "midi" / "piano.mid")
    seed = prepare(tmp_path / "midi", workers=1, progress=False, kind="seed")
    assert not seed["files"]
    reason = seed["failures"][0]["reason"]
    assert "first instrument part" in reason and "41 notes in 2 tracks" in reason and "--tokens grid" in reason
    grid = prepare(tmp_path / "midi", workers=1, progress=False, kind="grid")
    onsets = [t for t in grid["files"][0]["tokens"] if t not in ("hold", "rest")]
    assert len(onsets) == 40 and onsets[0] == "C4"  # one per piano step; the strings' C4 merges with the first
