"""What the controller's actions and the DAW's transport do to the running engine.

MIDI control actions (:mod:`lofi_live.live.controls`) act at once, on the engine thread, between grid
boundaries (``docs/LIVE_ENGINE.md``):

* ``temperature``: the setting now, the sampler from its next token (a message to the inference
  thread, which owns the sampler);
* ``tempo``: the grid re-anchors at the moment the engine applies it (within a millisecond or so of its
  arrival; never back in time, so no step already sent moves) and the recording gets the new tempo there; ``--clock link`` proposes it to the session (every peer follows); ``--clock midi``:
  ignored, logged once;
* ``mode``, ``response_bars``, ``key_lock``: settings the next step uses;
* ``panic``: the computed token is dropped, every sounding note ends, then CC 123 on every channel
  used; the model waits for the player (a key left down, a lost note-off, counts as released);
* ``mutate`` / ``loop``: a new response from the last one's context / the last response again
  (:mod:`lofi_live.live.conductor`);
* ``model_select``: the switch happens at the next boundary (:func:`switch_model`).

MIDI clock (``--clock midi``, :func:`transport`): the clock (:class:`lofi_live.timing.clock.MidiClock`, its
ticks read by :class:`lofi_live.timing.tick_follower.TickFollower`) announces a grid step when the tick
before it arrives, for the time its tick is due, and again when its tick arrives: the loop sends it at
the sooner of the two (``--offset-ms`` later, and a swung off-beat its swing later); Stop ends the model's notes at once and drops the computed token;
Start counts from beat 0 again (the model enters at step 1, as step 0's tick comes too soon to
compute a token); Continue goes on from where it stopped or from a Song Position Pointer.

Link (``--clock link``, :func:`follow`): the session stopping is a Stop; starting again, or its beat
jumping (joining a session, a peer forcing a beat), moves the grid to the first step still ahead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lofi_live.timing.clock import PPQN, TICKS_PER_STEP, ClockEvent, MidiClock, step_beat
from lofi_live.live.intake import Transport

if TYPE_CHECKING:
    from lofi_live.live.engine import Engine

log = logging.getLogger("lofi_live.live.engine")


def apply(engine: Engine, action: Any, now: float) -> None:
    """Apply one action (``kind`` and ``value``) at ``now`` (perf_counter seconds)."""
    name, value = action.kind, action.value
    conductor = engine.conductor
    if name == "temperature" and value is not None:
        engine.temperature = float(value)
        if engine.worker is not None:
            engine.worker.set_temperature(engine.temperature)
        else:  # no inference thread yet: the sampler is still this thread's
            engine.sampler.temperature = engine.temperature
    elif name == "tempo" and value is not None:
        if isinstance(engine.clock, MidiClock):
            engine.odd("tempo_midi", "tempo control ignored: the tempo follows the MIDI clock (--clock midi)")
            return
        tempo = engine.clock.set_bpm(float(value), now)  # Link: proposed to the session
        engine.session.set_tempo(tempo.beat_at(now), tempo.bpm)
        engine.recorded_bpm = tempo.bpm
    elif name == "mode" and value in ("continue", "accompany"):
        conductor.set_mode(value, engine.next_step)
    elif name == "response_bars" and value is not None:
        engine.config.response_bars = float(value)
    elif name == "panic":  # silence now; the engine goes on and waits for the player
        engine.lookahead.cancel()
        beat = engine.clock.beat_at(now)
        for channel, pitch in list(conductor.held):
            engine.session.note_off(beat, "player", pitch, channel)
            engine.steps.note_off(("player", channel, pitch), beat)
        conductor.panic()
        engine.panic()
    elif name == "key_lock":
        engine.keylock.toggle(value)
    elif name == "mutate":
        if conductor.last_response is None or not conductor.last_response.context:
            engine.odd("mutate_nothing", "mutate: no response to re-generate yet: ignored")
            return
        engine.lookahead.cancel()
        conductor.mutate(engine.next_step)
        engine.plan(engine.next_step)
    elif name == "loop":
        looping = conductor.toggle_loop()
        if looping is None:
            engine.odd("loop_nothing", "loop: no response to repeat yet: ignored")
            return
        engine.lookahead.cancel()
        if looping:
            engine.plan(engine.next_step)
    elif name == "model_select" and value is not None:
        if 0 <= int(value) < len(engine.models):
            engine.pending_model = int(value)  # applied at the next boundary
    else:
        engine.odd(f"action_{name}", f"control action {name!r} is not supported by the engine: ignored")


def switch_model(engine: Engine) -> None:
    """model_select, right after a boundary's notes are sent: the window is re-encoded to the new
    vocabulary, the key lock rebuilt, the sampler's repetition memory cleared (its indices changed)."""
    index, engine.pending_model = engine.pending_model, None
    model = engine.models[index]
    if model is engine.model:
        return
    engine.lookahead.cancel()  # computed with the old vocabulary
    entries = list(engine.timeline.entries)[-model.window :]  # all the new model will ever see of the past
    engine.timeline.reencode(model.encode([entry.token for entry in entries]))
    engine.model, engine.model_index = model, index
    engine.timeline.window = model.window
    if engine.worker is not None:
        engine.worker.forget()
    engine.keylock.rebuild(model.vocabulary)


def transport(engine: Engine, message: Transport) -> None:
    """A MIDI clock or transport message (the intake passes them on only under ``--clock midi``)."""
    clock = engine.clock
    assert isinstance(clock, MidiClock)
    if message.kind == "clock" and not clock.running and not clock.started_once:
        engine.odd("clock_without_start", "MIDI clock without Start: waiting for Start/Continue")
    event = clock.handle(message.kind, message.stamp, message.pos)
    if event is None:
        return
    if event.kind == "boundary":  # step ``event.step`` is due at ``event.time`` (now, or ahead)
        engine.close_steps(message.stamp)
        # a swung off-beat (and a humanized step) sounds that long after its tick
        offset = max(0.0, engine.config.offset_ms / 1000.0) + engine.swing_delay(event.step)
        if engine.midi_due is not None:  # a step still waiting for its time is sent first: steps keep their order
            due, engine.midi_due = engine.midi_due, None
            engine.boundary(*due)
        if offset or event.time > message.stamp:  # sent by the loop when due
            engine.midi_due = (event.step, event.time + offset)
        else:
            engine.boundary(event.step, message.stamp)
    elif event.kind == "arrived":  # the tick of a step announced ahead: no later than now
        due = engine.midi_due
        if due is not None and due[0] == event.step:
            offset = max(0.0, engine.config.offset_ms / 1000.0) + engine.swing_delay(event.step)
            engine.midi_due = (event.step, min(due[1], message.stamp + offset))
    elif event.kind == "stop":
        silence(engine)
        log.info("MIDI clock stopped at beat %.2f", clock.tick / PPQN)
    elif event.kind in ("start", "continue"):
        engine.next_step = event.step
        if event.kind == "start":  # beats count from 0 again: what was played before is forgotten
            engine.steps.clear()
            engine.model_steps.clear()
            engine.conductor.reset_player()
        soon = event.kind == "start" or (clock.tick + 1) % TICKS_PER_STEP == 0
        engine.plan(event.step + 1 if soon else event.step)
    elif event.kind == "position":
        engine.next_step = event.step


def silence(engine: Engine) -> None:
    """The clock stopped: the model's notes and the metronome end at once, the computed token is dropped."""
    engine.voices.release("model")
    engine.voices.release("metronome")
    engine.lookahead.cancel()
    engine.midi_due = None


def follow(engine: Engine, event: ClockEvent | None) -> None:
    """What a Link refresh found (:meth:`lofi_live.timing.link.LinkClock.poll`): the session stopped, or it
    started again or its beat jumped, and the grid goes on from ``event.step`` (the beats still count
    on, so what was played before is kept)."""
    if event is None:
        return
    if event.kind == "stop":
        silence(engine)
        log.info("Link session stopped at beat %.2f", engine.clock.beat_at(event.time))
        return
    engine.lookahead.cancel()  # computed for a step that is no longer the next one
    engine.next_step = event.step
    engine.plan(event.step)


def record_tempo(engine: Engine, step: int) -> None:
    """MIDI clock and Link, once a bar: the DAW's (the session's) tempo into the recording when it changed."""
    bpm = engine.clock.bpm
    if abs(bpm - engine.recorded_bpm) > 0.5:
        engine.recorded_bpm = bpm
        engine.session.set_tempo(step_beat(step), round(bpm, 2))
