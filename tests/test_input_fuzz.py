"""Fuzz test of the live input handler with random MIDI byte streams (issue 6, items 1 and 7).

The MIDI input thread only calls :meth:`Engine.on_message` (ports.py parses rtmidi's bytes with
``parse_message`` first, so malformed data arrives as ``MalformedMessage``); the engine thread then
takes ``(stamp, message)`` off the queue in :meth:`Engine._drain` and handles it. Here random bytes
become messages in both ways a port can deliver them (``mido.Parser`` over a byte stream, and
``parse_message`` over raw chunks, valid or not), they are queued with time stamps spread over a few
simulated grid steps and drained by the engine's own ``_drain`` between grid boundaries, on the
internal clock and on the MIDI clock (where random clock/start/stop bytes drive the grid).

After every boundary: nothing raised (only decoding may ignore a message; a fault in the engine's
own logic propagates out of ``_drain`` and fails the test), the window and the tokenizer hold only
valid tokens and pitches, and the grid state is consistent. At stop: every note-on the engine sent got its note-off,
no note is retriggered without its note-off first, and All Notes Off went to every channel used.
A second test drives the real engine thread through the real callback with a flood.
"""

from __future__ import annotations

import threading
import time

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_fakes import GRID_VOCABULARY, FakeModel, grid_model
from lofi_live.live.conductor import STATES
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.midi.ports import parse_message
from lofi_live.model.sampling import Sampler

STEP = 0.25  # seconds per grid step at 120 BPM
STEPS = 8


def _messages(chunks) -> list:
    """Random input as a port delivers it: a parsed byte stream, or one raw chunk per message."""
    found = []
    for how, data in chunks:
        if how == "stream":
            parser = mido.Parser()
            parser.feed(data)
            found.extend(parser)
        else:
            found.append(parse_message(data))
    return found


def _drain_all(engine: Engine) -> None:
    """What the engine thread does between boundaries: handle everything queued (its own _drain)."""
    while not engine.intake.queue.empty():
        engine._drain(time.perf_counter() + 0.005)


def _check_state(engine: Engine, model: FakeModel) -> None:
    assert engine.conductor.state in STATES
    size = len(model.vocabulary)
    for entry in engine.responder.timeline.entries:
        assert 0 <= entry.index < size and model.vocabulary[entry.index] == entry.token
    assert len(engine.responder.timeline.window_indices()) <= model.window
    for (channel, pitch), beat in engine.player.held.items():
        assert 0 <= channel <= 15 and 0 <= pitch <= 127 and beat == beat
    pending = engine.steps.onsets if engine.grid else engine.steps.pending
    for step, pitches in pending.items():
        assert all(0 <= p <= 127 for p in pitches)
    for channel, pitch in engine.voices.sounding:
        assert 0 <= channel <= 15 and 0 <= pitch <= 127
    assert engine.responder.played_steps + engine.responder.lookahead.late_steps <= engine.scheduler.step + 1


def _check_no_stuck_notes(sent: list[mido.Message], used_channels: set[int]) -> None:
    sounding: set[tuple[int, int]] = set()
    last_note_on = -1
    for i, message in enumerate(sent):
        if message.type == "note_on" and message.velocity > 0:
            key = (message.channel, message.note)
            assert key not in sounding, f"note-on for a sounding note without its note-off first: {message}"
            sounding.add(key)
            last_note_on = i
        elif message.type == "note_off" or (message.type == "note_on" and message.velocity == 0):
            sounding.discard((message.channel, message.note))
    assert not sounding, f"left sounding: {sorted(sounding)}"
    all_off = {m.channel for m in sent[last_note_on + 1 :] if m.type == "control_change" and m.control == 123}
    assert used_channels <= all_off


chunk = st.tuples(st.sampled_from(["stream", "raw"]), st.binary(min_size=0, max_size=48))
# bias towards the interesting status bytes: notes, CC, clock/transport
status_heavy = st.tuples(
    st.just("stream"),
    st.lists(st.one_of(st.sampled_from([0x90, 0x80, 0x91, 0xB0, 0xE0, 0xF0, 0xF7, 0xF8, 0xFA, 0xFB, 0xFC, 0xF2]),
                       st.integers(0, 10), st.integers(0, 255)), max_size=64).map(bytes),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.one_of(chunk, status_heavy), max_size=25),
    stamps=st.lists(st.floats(0, STEPS * STEP - 0.01), min_size=1, max_size=400),
    clock=st.sampled_from(["internal", "midi"]),
    mode=st.sampled_from(["continue", "accompany"]),
    thru=st.booleans(),
    in_channel=st.sampled_from([None, 0, 9]),
    seeded=st.booleans(),
    mapped=st.booleans(),
    grid=st.booleans(),
)
def test_random_midi_never_breaks_the_engine_or_leaves_a_note_on(chunks, stamps, clock, mode, thru, in_channel, seeded,
                                                                  mapped, grid):
    # a grid model (hold and rest) plays the next token of its vocabulary after the last one
    model = grid_model({t: GRID_VOCABULARY[(i + 1) % len(GRID_VOCABULARY)] for i, t in enumerate(GRID_VOCABULARY)}) \
        if grid else FakeModel()
    sent: list[mido.Message] = []
    config = EngineConfig(bpm=120, clock=clock, mode=mode, thru=thru, in_channel=in_channel, echo_ms=0,
                          realtime=False, max_note_beats=2.0, response_bars=2)
    controls = None
    if mapped:  # MIDI control on low CC numbers, so random bytes hit them: panic, mutate, loop, tempo...
        from lofi_live.live.controls import ControlMap

        numbers = {"temperature": 1, "tempo": 2, "mode": 3, "response_bars": 4, "panic": 5, "mutate": 6,
                   "loop": 7, "key_lock": 8}
        controls = ControlMap(numbers, state_cc=9, mode=mode)
    engine = Engine(model, Sampler(0, None, 0), send=sent.append, config=config, controls=controls)
    engine.start_worker()
    try:
        if seeded:
            engine.prime(["C4", "E4", "G4"])
        if clock == "internal":
            engine.clock.start(0.0)
        messages = _messages(chunks)
        stamps = sorted(stamps)
        timed = [(stamps[i % len(stamps)] + i * 1e-6, m) for i, m in enumerate(messages)]
        timed.sort(key=lambda item: item[0])
        i = 0
        for step in range(STEPS + 1):
            t = step * STEP
            while i < len(timed) and timed[i][0] <= t:
                stamp, message = timed[i]
                engine.voices.run_timers(stamp)
                engine.close_steps(stamp)
                engine.intake.queue.put((stamp, message))  # what on_message does, with a simulated stamp
                _drain_all(engine)
                i += 1
            engine.voices.run_timers(t)
            engine.close_steps(t)
            if clock == "internal":
                if engine.responder.lookahead.job is not None:
                    engine.responder.lookahead.job.done.wait(2)
                engine.boundary(step, t)
            _check_state(engine, model)
        assert engine.intake.messages_in == len(messages)
        engine.panic()  # what stop does, from the engine thread
        assert not engine.voices.sounding
        _check_no_stuck_notes(sent, engine.voices.used_channels)
    finally:
        engine.responder.worker.stop()


@pytest.mark.parametrize("clock", ["internal", "midi"])
def test_flood_through_the_callback_on_the_engine_thread(clock):
    """20,000 random messages through the real callback while the engine thread runs: it keeps the grid."""
    import random

    rnd = random.Random(6)
    model = FakeModel()
    sent: list[tuple[float, mido.Message]] = []
    lock = threading.Lock()

    def send(message):
        with lock:
            sent.append((time.perf_counter(), message))

    config = EngineConfig(bpm=120, clock=clock, mode="accompany", response_bars=64, thru=True, realtime=False)
    engine = Engine(model, Sampler(0, None, 0), send=send, config=config)
    engine.prime(["C4", "D4"])
    engine.start()
    try:
        stop_at = time.perf_counter() + 1.0
        count = 0
        while time.perf_counter() < stop_at and count < 20_000:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4)))
            if clock == "midi" and data[0] in (0xFA, 0xFB, 0xFC, 0xF8):
                data = b"\xfe"  # keep the transport out of it: this test checks the internal grid
            engine.on_message(parse_message(data))
            count += 1
        flood_end = time.perf_counter()
        time.sleep(1.2)
    finally:
        engine.stop()
        assert engine.join(10)
    assert engine.error is None, engine.error
    with lock:
        messages = [m for _, m in sent]
    _check_no_stuck_notes(messages, engine.voices.used_channels)
    if clock == "internal":
        # the model's note-ons after the flood are still on the grid
        grid = engine.clock.seconds_per_beat * 0.5
        anchor = engine.clock.step_time(0)
        onsets = [t for t, m in sent if m.type == "note_on" and m.velocity > 0 and m.channel == config.out_channel
                  and t > flood_end]
        assert onsets, "no notes after the flood"
        errors = [abs((t - anchor) / grid - round((t - anchor) / grid)) * grid for t in onsets]
        assert max(errors) < 0.02, max(errors)
