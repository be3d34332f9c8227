"""When each grid step sounds, and what the DAW's transport, Link and a tempo control do to the grid.

The :class:`Scheduler` owns the clock, the next step, the step last sent, a MIDI-clock step still
waiting for its time, and the humanize offset drawn for each step to come. It turns what happens
to the clock into :class:`Cue` values, in order, which the engine's loop carries out: the scheduler
itself sends nothing and touches no other part.

Grid times come from the clock's beat-to-time mapping (``clock.time_of_beat``), never from adding
intervals: nothing drifts.

MIDI clock (``--clock midi``, :meth:`Scheduler.transport`): the clock
(:class:`lofi_live.timing.clock.MidiClock`, its ticks read by
:class:`lofi_live.timing.tick_follower.TickFollower`) announces a grid step when the tick before it
arrives, for the time its tick is due, and again when its tick arrives ("arrived"): the loop sends it
at the sooner of the two (``--offset-ms`` later, a swung off-beat its swing later). An announcement
closes the steps due. Stop ends the model's notes at once and drops the computed token; Start counts from beat 0
again (the model enters at step 1, as step 0's tick comes too soon to compute a token); Continue
goes on from where it stopped or from a Song Position Pointer.

Link (``--clock link``, :meth:`Scheduler.follow`): the session stopping is a Stop; starting again,
or its beat jumping (joining a session, a peer forcing a beat), moves the grid to the first step
still ahead.

Thread: the engine thread's alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from lofi_live.timing.clock import PPQN, TICKS_PER_STEP, Clock, ClockEvent, InternalClock, MidiClock, step_beat
from lofi_live.timing.groove import Humanize, Swing

log = logging.getLogger("lofi_live.live.engine")

#: A change of the followed tempo smaller than this (BPM) is not written to the recording.
TEMPO_CHANGE_BPM = 0.5
#: How soon a step held for a stalled JACK server is looked at again (seconds).
SERVER_RECHECK = 0.001


def make_clock(source: str, bpm: float) -> Clock:
    """The clock ``--clock`` names; ``bpm`` is the tempo until a DAW's ticks or Link's peers say otherwise.
    The Link binding is imported only for ``link`` (a missing one is a one-line error)."""
    if source == "midi":
        return MidiClock(bpm)
    if source == "link":
        from lofi_live.timing.link import LinkClock

        return LinkClock(bpm)
    return InternalClock(bpm)


@dataclass(frozen=True)
class Cue:
    """What the loop does next, in order.

    * ``close``: the steps closed by ``when`` enter the timeline;
    * ``boundary``: grid step ``step`` sounds at ``when``;
    * ``silence``: the clock stopped: the model's notes and the metronome end, the computed token is dropped;
    * ``restart``: MIDI Start: beats count from 0 again, what was played before is forgotten;
    * ``plan``: compute the model's token for ``step``;
    * ``jump``: the grid moved: drop the computed token, then plan ``step``.
    """

    kind: str
    step: int = 0
    when: float = 0.0


class Scheduler:
    """The grid's clock and the steps to come (engine thread)."""

    def __init__(self, clock: Any, swing: Swing, humanize: Humanize, offset_ms: float,
                 odd: Callable[[str, str], None]):
        self.clock, self.swing, self.humanize, self.odd = clock, swing, humanize, odd
        self.offset = offset_ms / 1000.0
        self.next_step = 0
        self.step = -1  # the step last sent
        # --clock midi: a step waiting for its time, and that time on JACK's sample clock while its tick
        # has not come (see held_by_server)
        self.midi_due: tuple[int, float, float | None] | None = None
        #: JACK's sample clock now (seconds), when the MIDI ports read one (MidiPorts.frame_seconds)
        self.frame_clock: Callable[[], float | None] | None = None
        self.recorded_bpm = clock.bpm  # the tempo the recording has now
        self._offsets: dict[int, float] = {}  # humanize: the onset offset (beats) of each step to come

    @property
    def ahead(self) -> bool:
        """The grid is known ahead (internal clock, Link); ``--clock midi`` learns it tick by tick."""
        return not isinstance(self.clock, MidiClock)

    def start(self, at: float) -> int:
        """Internal clock and Link: start the grid at ``at`` (perf_counter seconds); the first step."""
        self.next_step = self.clock.start(at)
        return self.next_step

    def emit_at(self) -> float | None:
        """When the next boundary is sent: its swung grid time plus ``--offset-ms`` (MIDI clock: when due)."""
        if self.ahead and self.clock.running:  # internal, Link while its session plays
            return self.clock.time_of_beat(self.sounded_beat(self.next_step)) + self.offset
        return None if self.midi_due is None else self.midi_due[1]

    def held_by_server(self, now: float) -> bool:
        """Whether the step due now waits for a JACK server that has not reached its time. A step whose
        tick has not come goes a grace after the tick was due; but a stalled server sends no ticks,
        and plays what is sent meanwhile when it runs again, at the stall's start by its clock: the
        step would sound early. It is looked at again :data:`SERVER_RECHECK` later."""
        due = self.midi_due
        if due is None or due[2] is None or self.frame_clock is None:
            return False
        frame_now = self.frame_clock()
        if frame_now is None or frame_now >= due[2]:
            return False
        self.midi_due = (due[0], now + SERVER_RECHECK, due[2])
        return True

    def due(self) -> int:
        """The step the loop sends at :meth:`emit_at`."""
        if self.midi_due is not None:
            step, self.midi_due = self.midi_due[0], None
            return step
        return self.next_step

    def sounded_beat(self, step: int) -> float:
        """The beat grid step ``step`` sounds at: swung (``--swing``), moved by ``--humanize``.

        The humanize offset of a step is drawn once (kept until its boundary), so the time the loop
        waits for and the beat recorded for the step agree."""
        if step not in self._offsets:
            self._offsets[step] = self.humanize.offset_beats(self.clock.bpm, self.swing)
        return self.swing.step_beat(step) + self._offsets[step]

    def boundary(self, step: int) -> float:
        """Step ``step`` is sent now: the beat it sounds at."""
        self.step, self.next_step = step, step + 1
        beat = self.sounded_beat(step)
        for past in [each for each in self._offsets if each <= step]:
            del self._offsets[past]
        return beat

    def tempo_to_record(self, step: int) -> tuple[float, float] | None:
        """MIDI clock and Link, once a bar: ``(beat, bpm)`` for the recording when the tempo changed."""
        if isinstance(self.clock, InternalClock) or step % 8 or abs(self.clock.bpm - self.recorded_bpm) <= TEMPO_CHANGE_BPM:
            return None
        self.recorded_bpm = self.clock.bpm
        return step_beat(step), round(self.clock.bpm, 2)

    def set_tempo(self, bpm: float, now: float) -> tuple[float, float] | None:
        """The tempo control: the grid re-anchors at ``now`` (Link: proposed to the session); ``(beat,
        bpm)`` for the recording, None under ``--clock midi`` (the tempo follows the DAW)."""
        if not self.ahead:
            self.odd("tempo_midi", "tempo control ignored: the tempo follows the MIDI clock (--clock midi)")
            return None
        tempo = self.clock.set_bpm(bpm, now)
        self.recorded_bpm = tempo.bpm
        return tempo.beat_at(now), tempo.bpm

    def silence(self) -> None:
        """The clock stopped: a step waiting for its time is not sent."""
        self.midi_due = None

    def transport(self, kind: str, stamp: float, pos: int = 0, frame: float | None = None) -> list[Cue]:
        """A MIDI clock or transport message (``--clock midi``); ``frame``: a tick's JACK frame time."""
        clock = self.clock
        if kind == "clock" and not clock.running and not clock.started_once:
            self.odd("clock_without_start", "MIDI clock without Start: waiting for Start/Continue")
        event = clock.handle(kind, stamp, pos, frame)
        if event is None:
            return []
        if event.kind == "boundary":  # step ``event.step`` is due at ``event.time`` (now, or ahead)
            cues = [Cue("close", when=stamp)]
            offset = self._midi_offset(event.step)
            if self.midi_due is not None:  # a step still waiting for its time is sent first: steps keep their order
                cues.append(Cue("boundary", *self.midi_due[:2]))
                self.midi_due = None
            if offset or event.time > stamp:  # sent by the loop when due
                frame = None if event.frame is None or event.time <= stamp else event.frame + offset
                self.midi_due = (event.step, event.time + offset, frame)
            else:
                cues.append(Cue("boundary", event.step, stamp))
            return cues
        if event.kind == "arrived":  # the tick of a step announced ahead: due no later than now
            due = self.midi_due
            if due is not None and due[0] == event.step:  # its tick is here: no waiting for the server
                self.midi_due = (event.step, min(due[1], stamp + self._midi_offset(event.step)), None)
            return []
        if event.kind == "retime":  # a step announced ahead on a count since taken back: not due yet
            due = self.midi_due
            if due is not None and due[0] == event.step:
                offset = self._midi_offset(event.step)
                self.midi_due = (event.step, event.time + offset, None if event.frame is None else event.frame + offset)
            return []
        if event.kind == "stop":
            log.info("MIDI clock stopped at beat %.2f", clock.tick / PPQN)
            return [Cue("silence")]
        if event.kind in ("start", "continue"):
            self.next_step = event.step
            soon = event.kind == "start" or (clock.tick + 1) % TICKS_PER_STEP == 0
            cues = [Cue("restart")] if event.kind == "start" else []
            return cues + [Cue("plan", event.step + 1 if soon else event.step)]
        if event.kind == "position":
            self.next_step = event.step
        return []

    def _midi_offset(self, step: int) -> float:
        """How long after its tick step ``step`` sounds: ``--offset-ms``, plus a swung off-beat's
        swing (and a humanized step's offset)."""
        delay = max(0.0, self.sounded_beat(step) - step_beat(step)) * self.clock.seconds_per_beat
        return max(0.0, self.offset) + delay

    def stop_midi_clock(self, now: float) -> list[Cue]:
        """The MIDI clock's input went away: a Stop, when it was running."""
        if not isinstance(self.clock, MidiClock) or not self.clock.running:
            return []
        self.clock.handle("stop", now)
        return [Cue("silence")]

    def follow(self, event: ClockEvent | None) -> list[Cue]:
        """What a Link refresh found (:meth:`lofi_live.timing.link.LinkClock.poll`): the session stopped,
        or it started again or its beat jumped, and the grid goes on from ``event.step`` (the beats
        still count on, so what was played before is kept)."""
        if event is None:
            return []
        if event.kind == "stop":
            log.info("Link session stopped at beat %.2f", self.clock.beat_at(event.time))
            return [Cue("silence")]
        self.next_step = event.step
        return [Cue("jump", event.step)]

    def view(self) -> dict[str, Any]:
        """The scheduler's part of the view's snapshot."""
        return {"clock": self.clock.source, "bpm": self.clock.bpm, "step": max(self.step, 0), "swing": self.swing.pct,
                "next_boundary": self.emit_at() or 0.0}
