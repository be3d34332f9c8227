"""How the live engine is set up: the options of ``lofi-live run`` that the engine reads.

``response_bars`` may change while playing (the response_bars control) and ``variation`` is where the
variation control starts from; everything else is fixed once the engine is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from lofi_live.live.player import LOST_KEY_BARS
from lofi_live.model.loop_follow import DEFAULT_VARIATION

#: The engine thread spins (busy-waits) for this long before a boundary instead of sleeping.
SPIN_SECONDS = 0.0015


@dataclass
class EngineConfig:
    bpm: float = 120.0
    clock: str = "internal"  # internal | midi | link
    mode: str = "continue"
    wait_beats: float = 2.0
    release_ms: float | None = None  # continue mode: a phrase also ends after this much silence
    response_bars: float = 4.0
    gate: float = 0.9  # fraction of a grid step (seed models)
    velocity: int | None = None  # the model's notes; None: the dynamics of the player's last phrase
    swing: float = 50.0  # where the off-beat eighth lies in its beat, in % (50 = straight)
    humanize: bool = False  # seeded variation of the model's velocities and onsets
    seed: int | None = None  # humanize's seed
    out_channel: int = 0  # 0-based
    in_channel: int | None = None  # 0-based, None = all
    thru: bool = False
    offset_ms: float = 0.0
    metronome: int | None = None  # 0-based channel
    max_note_beats: float = 8.0
    lost_key_bars: float = LOST_KEY_BARS  # a key held this long with no input at all is taken as lost
    echo_ms: float = 30.0
    simulate_slow_ms: float = 0.0
    start_delay: float = 0.2  # seconds from start() to beat 0 (internal clock)
    spin: float = SPIN_SECONDS
    realtime: bool = True  # try a real-time priority for the engine thread
    variation: float = DEFAULT_VARIATION  # 0..1: the network against the heard loop / the copy gate (may change)
    follow: str = "chord"  # continue mode, grid models: "chord" follows the heard loop, "off" the network alone
