"""An engine on a simulated clock, for unit tests: input handled at its time stamps, each grid
boundary called in order once the look-ahead token is ready (120 BPM: a grid step is 0.25 s)."""

from __future__ import annotations

import mido

from engine_fakes import FakeModel
from lofi_live.live.engine import Engine, EngineConfig
from lofi_live.model.sampling import Sampler

STEP = 0.25  # seconds per grid step at 120 BPM


def on(pitch, channel=0, velocity=80):
    return mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(pitch, channel=0, zero_velocity=False):
    if zero_velocity:
        return mido.Message("note_on", note=pitch, velocity=0, channel=channel)
    return mido.Message("note_off", note=pitch, velocity=0, channel=channel)


class Sim:
    """An engine on a simulated clock; ``sent`` holds ``(step, message)`` for every output message."""

    def __init__(self, model=None, sampler=None, key=None, scale=None, controls=None, models=(), session=None,
                 **config):
        self.model = model or FakeModel()
        self.sent: list[tuple[int, mido.Message]] = []
        # the network alone unless a test follows the heard loop (follow="chord")
        cfg = EngineConfig(**{"bpm": 120, "echo_ms": 0, "realtime": False, "follow": "off", **config})
        self.engine = Engine(self.model, sampler or Sampler(0, None, 0), send=lambda m: self.sent.append((self.engine.scheduler.step, m)),
                             config=cfg, key=key, scale=scale, controls=controls, models=models, session=session)
        self.engine.start_worker()
        self.engine.clock.start(0.0)
        self.next = 0

    def run(self, until_step: int, events=()) -> None:
        """Handle ``events`` ``[(seconds, message)]`` and boundaries up to ``until_step`` included."""
        events = sorted(events, key=lambda e: e[0])
        engine = self.engine
        i = 0
        for step in range(self.next, until_step + 1):
            t = step * STEP
            while i < len(events) and events[i][0] <= t:
                stamp, message = events[i]
                engine.voices.run_timers(stamp)
                engine.close_steps(stamp)
                engine._handle(message, stamp)
                i += 1
            engine.voices.run_timers(t)
            engine.close_steps(t)
            if engine.responder.lookahead.job is not None:
                engine.responder.lookahead.job.done.wait(2)
            engine.boundary(step, t)
        self.next = until_step + 1

    def model_steps(self) -> list[int]:
        steps = []
        for step, m in self.sent:
            if m.type == "note_on" and m.velocity > 0 and (not steps or steps[-1] != step):
                steps.append(step)
        return steps

    def close(self) -> None:
        self.engine.responder.worker.stop()


def phrase(pitches, start_step=0, length=0.2):
    events = []
    for i, pitch in enumerate(pitches):
        t = (start_step + i) * STEP
        events += [(t + 0.001, on(pitch)), (t + length, off(pitch))]
    return events
