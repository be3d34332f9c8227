"""Note-ons paired with note-offs: the one rule every path reads notes by.

A MIDI stream (a file's track, a session's journal) says when keys go down and up; a note is a
note-on with the note-off of its key that ends it. Keys are whatever identifies a sounding note
(``(channel, pitch)`` in a file, ``(part, channel, pitch)`` in a session). A note-on with velocity 0 is
a note-off (the caller passes it as one), a note-off with nothing sounding is ignored, and a note
still sounding at the end ends there (:meth:`Pairing.close`).

What a note-on of a key that still sounds (a re-strike) means is the one thing that differs by what
is read, and it is named here, once:

* ``end`` (a performance: the session's journal and ``.mid``): the sounding note ends there and a
  new one begins; a player striking a key twice plays two notes;
* ``replace`` (MIDI files read for grid tokens, plots and groove; the shared grid conformance
  vectors expect it): the earlier start is dropped and the one note left starts at the second strike;
* ``stack`` (the seed tokenization, as music21 reads a file): every pending note-on of the key
  ends at the next note-off of that key.

A note-on the MIDI transport delivers twice within a few milliseconds is not a re-strike; the live
engine drops it before it is recorded (:mod:`lofi_live.live.player`).
"""

from __future__ import annotations

from typing import Any, Hashable, Iterator, NamedTuple

#: The re-strike rules (see the module's docstring).
RESTRIKES = ("end", "replace", "stack")


class Paired(NamedTuple):
    """One note: its key, where it began and ended (in the caller's unit: beats or ticks) and what the
    caller gave with its note-on (a velocity, a position)."""

    key: Hashable
    start: Any
    end: Any
    data: Any


class Pairing:
    """Pairs a stream's note-ons and note-offs in order; each call returns the notes it completed."""

    def __init__(self, restrike: str = "end"):
        if restrike not in RESTRIKES:
            raise ValueError(f"unknown re-strike rule {restrike!r} (one of {', '.join(RESTRIKES)})")
        self.restrike = restrike
        self.sounding: dict[Hashable, list[tuple[Any, Any]]] = {}  # key -> (start, data) of each pending note-on

    def on(self, key: Hashable, start: Any, data: Any = None) -> list[Paired]:
        """A note-on of ``key`` at ``start``."""
        pending = self.sounding.setdefault(key, [])
        done: list[Paired] = []
        if pending and self.restrike == "end":
            done = self.off(key, start)
            pending = self.sounding.setdefault(key, [])
        elif pending and self.restrike == "replace":
            pending.clear()
        pending.append((start, data))
        return done

    def off(self, key: Hashable, end: Any) -> list[Paired]:
        """A note-off of ``key`` at ``end``: the notes it ends (none when nothing sounds)."""
        pending = self.sounding.pop(key, [])
        return [Paired(key, start, end, data) for start, data in pending]

    def close(self, end: Any) -> Iterator[Paired]:
        """The notes still sounding, ended at ``end`` (the caller keeps an end before a start at the start)."""
        sounding, self.sounding = self.sounding, {}
        for key, pending in sounding.items():
            for start, data in pending:
                yield Paired(key, start, end, data)
