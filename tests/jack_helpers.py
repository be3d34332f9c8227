"""Helpers for the real-port tests: a player and a listener on the JACK server, and grid error maths.

Every client gets its own name (JACK renames duplicates), with the test process's PID in it, so
tests running in parallel on the same server never meet.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import mido

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix} {os.getpid()}-{next(_counter)}"


def jack_ports() -> list[str]:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=10).stdout.splitlines()


def wait_for_ports(names: Sequence[str], timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        present = set(jack_ports())
        if all(name in present for name in names):
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"engine exited with {proc.returncode} before its ports appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"ports {names} did not appear within {timeout} s (have {sorted(present)})")
        time.sleep(0.05)


def wait_for_connection(source: str, timeout: float = 5.0) -> None:
    """Until JACK lists a connection of ``source`` (``jack_lsp -c``): a port opened by name (``--in``)
    is an rtmidi client of its own, not the engine's virtual port."""
    deadline = time.monotonic() + timeout
    while True:
        listing = subprocess.run(["jack_lsp", "-c", source], capture_output=True, text=True, timeout=10).stdout
        if any(line.startswith((" ", "\t")) and line.strip() for line in listing.splitlines()):
            return
        assert time.monotonic() < deadline, f"{source} is not connected: {listing}"
        time.sleep(0.05)


def connect(source: str, destination: str) -> None:
    subprocess.run(["jack_connect", source, destination], check=True, capture_output=True, timeout=10)


class Listener:
    """A virtual input that records ``(perf_counter, message)`` for everything it receives (and hands
    each message to ``also``, when given, on its reading thread).

    rtmidi queues what arrives and a thread of this object takes it out, as the engine reads its input
    (:class:`lofi_live.midi.input_reader.PolledInput`). With a Python callback, rtmidi calls Python from
    JACK's process thread, which then waits for Python's lock; while the test's own threads hold it, a
    late cycle loses the rest of its events (a burst of note-offs and All Notes Off was heard only in
    part so). Each message is stamped with the time JACK's cycle handed it over: rtmidi's deltas are
    on JACK's clock (``CLOCK_MONOTONIC_RAW``: within a few ppm of ``perf_counter``, measured), so their
    running sum plus the least offset seen between it and the time a message was read (the most
    prompt read so far, applied to every message when :meth:`snapshot` is called) gives that time,
    whatever the delay before the reading thread took it."""

    def __init__(self, backend: str, name: str | None = None, also: Callable[[mido.Message], None] | None = None):
        self.name = name or unique("lofi-listen")
        self._heard: list[tuple[float, mido.Message]] = []  # (rtmidi's clock, message)
        self._offset = float("inf")  # perf_counter less rtmidi's clock: the least seen at a read
        self._lock = threading.Lock()
        self._also = also
        self.port = mido.Backend(backend).open_input(self.name, virtual=True, client_name=self.name)
        self._rt = self.port._rt
        self._rt.cancel_callback()  # rtmidi queues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"{self.name} reader", daemon=True)
        self._thread.start()
        self.jack_name = f"{self.name}:{self.name}"

    def _read(self) -> None:
        elapsed = 0.0  # rtmidi's clock: seconds since the first message
        while not self._stop.is_set():
            read = []
            while (event := self._rt.get_message()) is not None:
                elapsed += event[1]
                read.append((elapsed, mido.Message.from_bytes(event[0])))
            if not read:
                time.sleep(0.0005)
                continue
            with self._lock:
                self._offset = min(self._offset, time.perf_counter() - elapsed)
                self._heard += read
            if self._also is not None:
                for _, message in read:
                    self._also(message)

    def snapshot(self) -> list[tuple[float, mido.Message]]:
        """``(perf_counter time, message)`` for everything heard so far."""
        with self._lock:
            return [(at + self._offset, message) for at, message in self._heard]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.port.close()


class Player:
    """A virtual output to play notes from."""

    def __init__(self, backend: str, name: str | None = None):
        self.name = name or unique("lofi-play")
        self.port = mido.Backend(backend).open_output(self.name, virtual=True, client_name=self.name)
        self.jack_name = f"{self.name}:{self.name}"
        self.sent: list[tuple[float, mido.Message]] = []

    def send(self, message: mido.Message) -> None:
        self.sent.append((time.perf_counter(), message))
        self.port.send(message)

    def play_phrase(self, pitches: Sequence[int], interval: float, length: float, channel: int = 0) -> None:
        """Notes ``interval`` seconds apart, each ``length`` long, timed from one start (no drift)."""
        start = time.perf_counter()
        for i, pitch in enumerate(pitches):
            _sleep_until(start + i * interval)
            self.send(mido.Message("note_on", note=pitch, velocity=80, channel=channel))
            _sleep_until(start + i * interval + length)
            self.send(mido.Message("note_off", note=pitch, velocity=0, channel=channel))

    def close(self) -> None:
        self.port.close()


def _sleep_until(when: float) -> None:
    remaining = when - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


def note_ons(events, channel: int | None = None) -> list[tuple[float, mido.Message]]:
    return [(t, m) for t, m in events if m.type == "note_on" and m.velocity > 0 and (channel is None or m.channel == channel)]


def onset_times(events, channel: int | None = None) -> list[float]:
    """Distinct onset times: the notes of one chord arrive together and count once."""
    times: list[float] = []
    for t, _ in note_ons(events, channel):
        if not times or t - times[-1] > 0.02:
            times.append(t)
    return times


def grid_errors(times: Sequence[float], grid: float, reference: float | None = None) -> list[float]:
    """Distance (s) of each onset from the nearest multiple of ``grid`` after the reference onset.

    The reference is the first onset unless given, so a constant delivery latency cancels out.
    """
    if not times:
        return []
    ref = times[0] if reference is None else reference
    return [abs((t - ref) - round((t - ref) / grid) * grid) for t in times]


def grid_errors_fit(times: Sequence[float], grid: float) -> list[float]:
    """Onset errors against the best-fitting grid phase (median offset), for a fair p99."""
    if not times:
        return []
    ref = times[0]
    offsets = sorted(((t - ref) - round((t - ref) / grid) * grid) for t in times)
    phase = offsets[len(offsets) // 2]
    return [abs((t - ref - phase) - round((t - ref - phase) / grid) * grid) for t in times]


def swung_grid_errors_fit(times: Sequence[float], bpm: float, swing_pct: float) -> list[float]:
    """Onset errors (s) against the best-fitting swung grid: on-beats, and off-beats ``swing_pct`` %
    through their beat (:class:`lofi_live.timing.groove.Swing`, so 66 is the triplet).

    The first onset is taken as an on-beat, then as an off-beat; each time the grid's phase is then
    fitted (the median signed offset, so a constant delivery latency cancels out, as in
    :func:`grid_errors_fit`), and the fit with the smaller total error is kept."""
    from lofi_live.timing.groove import Swing

    if not times:
        return []
    beat = 60.0 / bpm
    off_beat = Swing(swing_pct).fraction
    points = (0.0, off_beat, 1.0)

    def signed(position: float) -> float:  # from the nearest grid point, in beats
        return min((position - point for point in points), key=abs)

    best: list[float] = []
    for first in (0.0, off_beat):
        positions = [((t - times[0]) / beat + first) % 1.0 for t in times]
        offsets = sorted(signed(p) for p in positions)
        phase = offsets[len(offsets) // 2]
        errors = [abs(signed((p - phase) % 1.0)) * beat for p in positions]
        if not best or sum(errors) < sum(best):
            best = errors
    return best


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


def unmatched_note_ons(events) -> list[tuple[int, int]]:
    """``(channel, pitch)`` of notes still sounding at the end of ``events``."""
    sounding: dict[tuple[int, int], int] = {}
    for _, m in events:
        if m.type == "note_on" and m.velocity > 0:
            sounding[(m.channel, m.note)] = sounding.get((m.channel, m.note), 0) + 1
        elif m.type in ("note_off", "note_on"):
            key = (m.channel, m.note)
            if sounding.get(key):
                sounding[key] -= 1
    return [key for key, count in sounding.items() if count > 0]


def still_sounding(events) -> list[tuple[int, int]]:
    """Notes left sounding for a synth that honours All Notes Off (CC 123 ends every note of its channel).

    This is the musical criterion: a note whose note-off JACK dropped (an xrun on a loaded machine
    loses a message now and then) is still ended by the CC 123 the engine sends when it stops.
    """
    sounding: set[tuple[int, int]] = set()
    for _, m in events:
        if m.type == "note_on" and m.velocity > 0:
            sounding.add((m.channel, m.note))
        elif m.type in ("note_off", "note_on"):
            sounding.discard((m.channel, m.note))
        elif m.type == "control_change" and m.control == 123:
            sounding = {key for key in sounding if key[0] != m.channel}
    return sorted(sounding)


def all_notes_off_channels(events) -> set[int]:
    return {m.channel for _, m in events if m.type == "control_change" and m.control == 123}


def engine_command(model: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lofi_live.cli", "run", "--backend", "jack", "--model", str(model), "--name", name, *extra]


def engine_ports(name: str) -> tuple[str, str]:
    """(the engine's input port to play into, its output port to listen to) on JACK."""
    return f"{name}:{name}", f"{name} Out:{name}"


class MidiDump:
    """``jack_midi_dump`` under its own client name, writing what it hears to a file as it hears it."""

    def __init__(self, path: Path, name: str | None = None):
        self.name = name or unique("lofi-dump")
        self.jack_name = f"{self.name}:input"
        self.path = path
        rate = subprocess.run(["jack_samplerate"], capture_output=True, text=True, timeout=10).stdout
        self.rate = int(rate.split()[0])
        command = ["jack_midi_dump", "-a", self.name]
        if shutil.which("stdbuf"):  # one line as soon as it is printed, so the test can wait on it
            command = ["stdbuf", "-oL", *command]
        with self.path.open("w") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        wait_for_ports([self.jack_name], proc=self.proc)

    def messages(self) -> list[tuple[float, mido.Message]]:
        """``(seconds since the dump started, message)`` for every complete line so far."""
        heard = []
        for line in self.path.read_text().splitlines():
            frames, _, rest = line.partition(":")
            data = []
            for field in rest.split():
                if len(field) != 2:
                    break
                try:
                    data.append(int(field, 16))
                except ValueError:
                    break
            if frames.strip().isdigit() and data:
                heard.append((int(frames) / self.rate, mido.Message.from_bytes(data)))
        return heard

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def play_chord_loop(player: "Player", loop, chord_seconds: float, held_seconds: float, times: int = 2) -> None:
    """Play ``loop`` (chords of pitches) ``times`` over from now, one chord every ``chord_seconds``, each held
    ``held_seconds``: a player looping a chord progression into the engine."""
    start = time.perf_counter()
    for repeat in range(times):
        for index, chord in enumerate(loop):
            at = start + (repeat * len(loop) + index) * chord_seconds
            time.sleep(max(0.0, at - time.perf_counter()))
            for pitch in chord:
                player.send(mido.Message("note_on", note=pitch, velocity=80))
            time.sleep(max(0.0, at + held_seconds - time.perf_counter()))
            for pitch in chord:
                player.send(mido.Message("note_off", note=pitch, velocity=0))


class PrivateServer:
    """A JACK server of the test's own (``jackd -n NAME``): stopping it disturbs no other test."""

    def __init__(self, name: str):
        self.name = name
        env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
        self.proc = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "128"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waited = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True, timeout=20)
        assert waited.returncode == 0 and self.proc.poll() is None, waited.stdout + waited.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
