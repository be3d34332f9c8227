"""Ableton Link (``--clock link``): the engine joins the Link session on the local network.

Ableton Live, Bitwig, Traktor and many phone apps share one beat timeline over Link: a tempo, a beat
phase (here with quantum 4, so the model's bar lines fall on the session's bar lines) and, for the
peers that enable it, start/stop. :class:`LinkClock` follows that timeline with the same readings as
:mod:`lofi_live.timing.clock`'s internal clock (``beat_at``, ``time_of_beat``, ``bpm``, ``running``...), so the
engine computes grid times from it and spins to them exactly as it does on its own tempo.

Binding
    ``LinkPython-extern`` (the ``[link]`` extra, module ``link``): its ``captureAppSessionState()``
    may be called from any thread and gives Link's own exact beat <-> time mapping
    (``beatAtTime``/``timeAtBeat``), which a grid time needs. (``aalink`` exposes only the beat now
    and an asyncio wait for a beat, not a mapping a plain thread can compute a future time from.)

Two clocks
    Link's times are microseconds of its own clock (``CLOCK_MONOTONIC_RAW`` on Linux); the engine's
    are ``time.perf_counter()`` seconds. The two run at slightly different rates (NTP slews one and
    not the other), so their offset is measured again at every refresh: the Link clock is read
    between two ``perf_counter()`` readings, three times, and the tightest bracket's midpoint is kept
    (about a microsecond).

One snapshot
    The engine thread refreshes the clock (:meth:`LinkClock.poll`) at every pass of its loop, at
    least every 20 ms, so a tempo change by any peer moves the grid within a fraction of a beat; the
    result is published as one immutable :class:`LinkTimeline`, which the journal (main thread) and
    the view read without ever seeing half of a change. The timeline is linear between refreshes, as
    Link's is between tempo changes.

Start/stop
    Start/stop sync is enabled on this peer, whose own transport is set playing before it joins: Link
    shares a start or a stop when it happens, not when a peer joins, so joining starts or stops no
    one, and the engine plays until the session's peers stop (a session that never uses start/stop
    never stops it). Then stop ends the model's notes at once; start plays again from the next grid
    step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import ModuleType

from lofi_live.timing.clock import ClockEvent
from lofi_live.errors import LofiError
from lofi_live.tokens.grid import first_step_from
from lofi_live.tokens.rules import check_bpm, clamp_bpm

#: Beats per bar shared with the session: Link aligns the phase of this many beats across peers.
QUANTUM = 4.0
#: A grid step closer than this (seconds) when playing starts or the timeline jumps is left out:
#: its token could not be computed in time.
START_MARGIN = 0.01
#: A change of the beat at one moment larger than this (beats) between two refreshes is a jump of
#: the timeline (joining a session, a peer forcing a beat), not a tempo change, which keeps the
#: beat where it is at the time it takes effect.
JUMP_BEATS = 1.0 / 16
#: Offset readings per refresh; the tightest bracket wins.
OFFSET_READINGS = 3

INSTALL_HINT = "--clock link needs Ableton Link support: pip install 'lofi-live[link]' (the LinkPython-extern package)"


def require() -> ModuleType:
    """The Link binding's module, or a one-line error saying which extra installs it."""
    try:
        import link
    except ImportError:
        raise LofiError(INSTALL_HINT) from None
    if not hasattr(link, "Link"):  # another package named ``link``
        raise LofiError(INSTALL_HINT)
    return link


@dataclass(frozen=True)
class LinkTimeline:
    """The session's timeline as one value, in the engine's terms.

    ``anchor_beat`` (engine beats: Link beats less the clock's bar-aligned origin) is at
    ``anchor_time`` (``perf_counter`` seconds); beats advance ``1 / seconds_per_beat`` per second.
    ``seconds_per_beat`` is measured from Link's own mapping, which includes its clock-drift
    compensation; ``bpm`` is the session tempo as Link states it, for display and the recording.
    """

    bpm: float
    anchor_time: float
    anchor_beat: float
    seconds_per_beat: float
    running: bool
    peers: int = 0

    def beat_at(self, now: float) -> float:
        return self.anchor_beat + (now - self.anchor_time) / self.seconds_per_beat

    def time_of_beat(self, beat: float) -> float:
        return self.anchor_time + (beat - self.anchor_beat) * self.seconds_per_beat

    def first_step(self, not_before: float) -> int:
        """The first grid step at or after ``not_before``."""
        return first_step_from(self.beat_at(not_before))


class LinkClock:
    """A peer of the Link session; readings come from the last published :class:`LinkTimeline`."""

    source = "link"

    def __init__(self, bpm: float):
        binding = require()
        self._link = binding.Link(check_bpm(bpm))  # the tempo when no other peer is there
        self._micros = self._link.clock().micros
        state = self._link.captureAppSessionState()
        state.setIsPlaying(True, self._micros())  # before sync and the network: announced to no one
        self._link.commitAppSessionState(state)
        self._link.startStopSyncEnabled = True
        self._link.enabled = True
        self.origin = 0.0  # the Link beat that is the engine's beat 0: a bar line
        self.started_at = 0.0  # when the session's transport last started (perf_counter; may lie ahead)
        self.timeline = self._read()

    # -- readings (from the published timeline) ---------------------------------------------

    @property
    def bpm(self) -> float:
        return self.timeline.bpm

    @property
    def running(self) -> bool:
        return self.timeline.running

    @property
    def peers(self) -> int:
        return self.timeline.peers

    @property
    def seconds_per_beat(self) -> float:
        return self.timeline.seconds_per_beat

    def beat_at(self, now: float) -> float:
        return self.timeline.beat_at(now)

    def time_of_beat(self, beat: float) -> float:
        return self.timeline.time_of_beat(beat)

    # -- the engine thread --------------------------------------------------------------------

    def start(self, now: float) -> int:
        """Count beats from the session's bar line at or before ``now``; returns the first step to play."""
        self.origin = 0.0
        timeline = self._read()
        self.origin = math.floor(timeline.beat_at(now) / QUANTUM) * QUANTUM
        self.timeline = self._read()
        return self.timeline.first_step(now)

    def poll(self, now: float) -> ClockEvent | None:
        """Catch up with the session; says when it stopped, started or jumped (the next step to play)."""
        old = self.timeline
        new = self.timeline = self._read()
        if old.running and not new.running:
            return ClockEvent("stop", None, now)
        if new.running and not old.running:
            return ClockEvent("start", new.first_step(max(now + START_MARGIN, self.started_at)), now)
        if new.running and abs(new.beat_at(now) - old.beat_at(now)) > JUMP_BEATS:
            return ClockEvent("position", new.first_step(now + START_MARGIN), now)
        return None

    def set_bpm(self, bpm: float, now: float) -> LinkTimeline:
        """Propose a tempo to the session from ``now`` on (the beat at ``now`` stays); returns the new
        timeline. Every peer follows it, as Link lets any peer change the tempo."""
        offset, _ = self._offset()
        state = self._link.captureAppSessionState()
        state.setTempo(clamp_bpm(bpm), round((now - offset) * 1e6))
        self._link.commitAppSessionState(state)
        self.timeline = self._read()
        return self.timeline

    # -- Link -----------------------------------------------------------------------------------

    def _offset(self) -> tuple[float, int]:
        """``perf_counter() - link_micros / 1e6`` now, and the Link time it was read at."""
        best = (math.inf, 0.0, 0)
        for _ in range(OFFSET_READINGS):
            before = time.perf_counter()
            micros = self._micros()
            after = time.perf_counter()
            if after - before < best[0]:
                best = (after - before, (before + after) / 2 - micros / 1e6, micros)
        return best[1], best[2]

    def _read(self) -> LinkTimeline:
        """The session's timeline now, converted to ``perf_counter`` time and engine beats."""
        offset, micros = self._offset()
        state = self._link.captureAppSessionState()
        bar = math.floor(state.beatAtTime(micros, QUANTUM) / QUANTUM) * QUANTUM
        at_bar = state.timeAtBeat(bar, QUANTUM)  # microseconds, exact to 1 us
        at_next_bar = state.timeAtBeat(bar + QUANTUM, QUANTUM)
        self.started_at = state.timeForIsPlaying() / 1e6 + offset
        return LinkTimeline(
            bpm=state.tempo(),
            anchor_time=at_bar / 1e6 + offset,
            anchor_beat=bar - self.origin,
            seconds_per_beat=(at_next_bar - at_bar) / 1e6 / QUANTUM,
            running=state.isPlaying(),
            peers=self._link.numPeers(),
        )
