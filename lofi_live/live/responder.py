"""The model's side of the engine: the models, the timeline they read, the look-ahead, the key lock,
switching models, and sounding the token the model chose.

Look-ahead (:mod:`lofi_live.live.inference`): the token for step ``n + 1`` is computed as soon as its
window is known (seed models: right after boundary ``n``; grid models: when step ``n`` closes), so a
boundary only sends messages.

A grid model's response follows :class:`lofi_live.tokens.grid.GridGrammar`, as ``generate`` does: it
opens with an onset, never ``hold`` or ``rest`` (the silence before a response is the player's pause,
already in the window as rests; a response that opened with more of it could stay silent for its whole
length, and a hold would hold nothing), holds only while it sounds, and rests at most a bar in a row.

In continue mode a grid model's answer follows the loop the player just played (``--follow chord``,
the default; :mod:`lofi_live.live.inference`): its first token carries the phrase, the rest their step
counted from the answer's start; ``--variation`` weighs the network against replaying the loop.

``model_select`` waits for the next boundary (:meth:`Responder.switch`): the window is re-encoded to
the new vocabulary, the key lock rebuilt, the sampler's repetition memory cleared (its indices changed).

Thread: the engine thread's. The stepper and the sampler belong to the inference thread from
:meth:`Responder.start_worker` on; the responder changes the sampler by message. It touches the
voices (the model's notes), the step tokens, the recording (through the voices' session), the
dynamics, the conductor (told what the model played) and the view's roll (``recent``).
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any, Sequence

from lofi_live.errors import LofiError
from lofi_live.live.bars import BarGrid
from lofi_live.live.conductor import Conductor
from lofi_live.live.inference import InferenceWorker, Job, KeyLock, LookAhead, percentile
from lofi_live.live.timeline import Timeline
from lofi_live.live.voices import Voices
from lofi_live.model.loop_follow import DEFAULT_VARIATION
from lofi_live.timing.clock import step_beat
from lofi_live.timing.groove import Dynamics, Swing
from lofi_live.tokens import rules as token_rules
from lofi_live.tokens.grid import MAX_RESTS, GridGrammar


class Responder:
    """The models and what they play (engine thread)."""

    def __init__(self, model: Any, sampler: Any, models: Sequence[Any], key: str | None, scale: str | None,
                 conductor: Conductor, odd: Any, simulate_slow_ms: float = 0.0,
                 variation: float = DEFAULT_VARIATION, follow: bool = True):
        self.model, self.sampler = model, sampler
        self.models = list(models) or [model]
        if model not in self.models:
            self.models.insert(0, model)
        if len({each.tokens for each in self.models}) > 1:
            raise LofiError("--model: grid and seed models cannot be switched between (give models of one tokenization)")
        self.grid = model.tokens == "grid"
        self.bars = BarGrid()  # where the bar line is (the core gives the clock's); read for the positions
        self.model_index = self.models.index(model)
        self.pending_model: int | None = None
        self.conductor, self.odd, self.slow_ms = conductor, odd, simulate_slow_ms
        self.timeline = Timeline(model.window, max_rests=MAX_RESTS if self.grid else None)
        self.lookahead = LookAhead()
        self.worker: InferenceWorker | None = None
        self.keylock = KeyLock(model.vocabulary, key, scale)
        self.temperature = sampler.temperature  # the setting; the sampler itself is the inference thread's
        self.variation = variation  # the setting; the stepper and the loop follower are the inference thread's
        self.follow = follow  # continue mode, grid models: the answer follows the heard loop
        self._heard_end: int | None = None  # the step after the phrase the answer follows (engine thread)
        self._grammar: GridGrammar | None = None  # grid models: the grammar of the response being played
        self._grammar_of: Any = None  # the response (conductor.last_response) it follows
        self.played_steps = 0
        self.notes = 0  # note-ons the model answered with
        self.emission_errors: deque[float] = deque(maxlen=20000)

    # -- life cycle ---------------------------------------------------------------------------

    def prime(self, tokens: Sequence[str]) -> int:
        """Fill the window from seed tokens (before start); the model then responds at once."""
        indices = self.model.encode(list(tokens))[-self.model.window :]
        for offset, index in enumerate(indices):  # the seed ends just before step 0 (on a bar line)
            self.timeline.append(offset - len(indices), "seed", self.model.vocabulary[index], index)
        if indices:
            self.conductor.seed()
        return len(indices)

    def start_worker(self) -> None:
        """Start the inference thread; from now on it alone touches the sampler."""
        self.worker = InferenceWorker(self.model, self.sampler, self.slow_ms, self.variation)
        self.lookahead.worker = self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    # -- the timeline -------------------------------------------------------------------------

    def append(self, step: int, part: str, token: str) -> None:
        """A closed step's token into the timeline (an unknown one as the nearest the model knows)."""
        index = self.model.encode([token])[0]
        if self.model.vocabulary[index] != token:
            self.odd("nearest", f"played {token} is not in the model's vocabulary: using the nearest known token")
        self.timeline.append(step, part, self.model.vocabulary[index], index)

    # -- planning -----------------------------------------------------------------------------

    def plan(self, step: int, bpm: float) -> None:
        """Start computing the token for ``step`` if the model plays then."""
        model, conductor, lookahead = self.model, self.conductor, self.lookahead
        if not conductor.should_play(step, bpm, len(self.timeline) > 0):
            return
        if lookahead.job is not None:  # still computing an earlier (late) token: it will serve this step
            return
        replay = conductor.replay
        if replay is not None and replay.kind == "loop":  # no model: the token is known
            tokens = replay.response.tokens
            job = Job(step, self.timeline.count, [])
            job.token = model.encode([tokens[replay.pos % len(tokens)]])[0]
            lookahead.ready(job)
            return
        allowed = self.keylock.mask(self.timeline)
        if self.grid:
            allowed = self._response_grammar().allowed(allowed)
        if replay is not None:  # mutate: the old context and what this response played so far
            sequence = model.encode(replay.response.context + replay.response.tokens)
            job = Job(step, len(sequence), sequence[-model.window :], allowed, model, replay.stream)
        else:
            job = Job(step, self.timeline.count, self.timeline.window_indices(), allowed, model,
                      positions=self._positions(), downbeat=self.bars.downbeat)
            if self.grid and self.follow and conductor.mode == "continue":
                if not conductor.response_open:  # the answer's first token: the phrase it follows
                    job.heard, self._heard_end = self._heard()
                # the step's place after the phrase, which ends on a bar line that may come before the
                # answer's (the first bar line after the wait): a two-bar loop answered a bar later goes on
                # from its second bar
                start = conductor.answer_from if self._heard_end is None else self._heard_end
                job.cycle = max(0, step - start)
        lookahead.submit(job)

    def _heard(self) -> tuple[list[int], int | None]:
        """The player's phrase an answer follows and the step after it: the timeline since the model last
        played, up to the first bar line after its last sounding step (so it ends on a bar line, as a seed
        clip does)."""
        entries = list(self.timeline.entries)
        played = [i for i, entry in enumerate(entries) if entry.part == "model"]
        phrase = entries[played[-1] + 1 :] if played else entries
        sounding = [entry.step for entry in phrase if entry.token != token_rules.REST]
        if not sounding:
            return [], None
        end = self.bars.answer_start(sounding[-1] + 1)
        return [entry.index for entry in phrase if entry.step < end], end

    def _positions(self) -> list[int] | None:
        """The bar position of each window token (from the step it sounded at), for a model that reads
        them; None while the bar line is not known (the stepper then counts from the window's start)."""
        if not getattr(self.model, "uses_position", False) or not self.bars.known:
            return None
        entries = list(self.timeline.entries)[-self.timeline.window :]
        return [self.bars.position(entry.step) for entry in entries]

    def _response_grammar(self) -> GridGrammar:
        """The grammar of the response the next token belongs to: a new one when a response begins (it
        opens with an onset) or a mutate replays a context (it goes on from it)."""
        conductor = self.conductor
        follows = conductor.last_response if conductor.response_open else None  # None: a response to begin
        if self._grammar is None or self._grammar_of is not follows:
            self._grammar = GridGrammar(self.model.vocabulary, opens_with_onset=follows is None)
            self._grammar_of = follows
        return self._grammar

    def cancel(self) -> None:
        """Drop the computed token (the player came back, a control, the clock stopped)."""
        self.lookahead.cancel()

    def take(self, step: int) -> int | None:
        """At boundary ``step``: the model's token, or None (not playing, or not ready: a late step)."""
        lookahead = self.lookahead
        job = lookahead.job
        if job is None or job.cancelled or not self.conductor.still_plays():
            lookahead.drop_done()
            return None
        index, late = lookahead.take(step)
        if late:
            self.odd("late", "a token was not ready at its grid time: step skipped (see late steps)")
        return index

    # -- sounding -----------------------------------------------------------------------------

    def play(self, step: int, index: int, when: float, beat: float, voices: Voices, steps: Any,
             dynamics: Dynamics, swing: Swing, recent: deque, config: Any) -> None:
        """The model's token at boundary ``step``: notes struck (or held, or released), recorded."""
        token = self.model.vocabulary[index]
        struck = token_rules.token_pitches(token)  # none for hold and rest
        velocities = [(pitch, dynamics.velocity(step)) for pitch in struck]
        began = not self.conductor.response_open
        self.conductor.played(token, self.timeline.window_tokens)
        if self._grammar is not None:
            if began and self._grammar_of is None:  # the response this token opened
                self._grammar_of = self.conductor.last_response
            if self._grammar_of is self.conductor.last_response:
                self._grammar.add(token)
        seconds_per_beat = voices.clock.seconds_per_beat
        if self.grid:
            if token != token_rules.HOLD:  # an onset or a rest ends what the model sounds
                voices.release("model", beat)
            bound = when + config.max_note_beats * seconds_per_beat  # held at most that long
            for pitch, velocity in velocities:
                voices.note_on(config.out_channel, pitch, velocity, "model", bound, beat, beat + config.max_note_beats)
                steps.note_on(("model", config.out_channel, pitch), beat)
            steps.model_played(step)  # its token enters the timeline when the step closes
        else:
            # the gate is a fraction of the step as it sounds: a swung off-beat is shorter
            gate = swing.sounded(step_beat(step) + config.gate * token_rules.GRID_BEATS) - swing.step_beat(step)
            off = when + gate * seconds_per_beat
            for pitch, velocity in velocities:
                voices.note_on(config.out_channel, pitch, velocity, "model", off, beat, beat + gate)
            self.timeline.append(step, "model", token, index)
        self.emission_errors.append(time.perf_counter() - when)
        self.notes += len(velocities)
        for pitch, velocity in velocities:
            voices.session.note_on(beat, "model", pitch, velocity, config.out_channel)
        sounding = tuple(key[1] for key, entry in voices.sounding.items() if entry.part == "model")
        recent.append((step, "model", sounding if token == token_rules.HOLD else tuple(struck)))
        self.played_steps += 1

    # -- controls -----------------------------------------------------------------------------

    def set_temperature(self, value: float) -> None:
        """The setting now, the sampler from its next token (a message to the inference thread)."""
        self.temperature = float(value)
        if self.worker is not None:
            self.worker.set_temperature(self.temperature)
        else:  # no inference thread yet: the sampler is still this thread's
            self.sampler.temperature = self.temperature

    def set_variation(self, value: float) -> None:
        """The setting now, the stepper's copy gate and the loop follower from the next token (a message)."""
        self.variation = float(value)
        if self.worker is not None:
            self.worker.set_variation(self.variation)

    def select(self, index: int) -> None:
        """model_select: switch to model ``index`` at the next boundary."""
        if 0 <= index < len(self.models):
            self.pending_model = index

    def switch(self) -> None:
        """model_select, right after a boundary's notes are sent (see the module's docstring)."""
        if self.pending_model is None:
            return
        index, self.pending_model = self.pending_model, None
        model = self.models[index]
        if model is self.model:
            return
        self.cancel()  # computed with the old vocabulary
        entries = list(self.timeline.entries)[-model.window :]  # all the new model will ever see of the past
        self.timeline.reencode(model.encode([entry.token for entry in entries]))
        self.model, self.model_index = model, index
        self.timeline.window = model.window
        if self.worker is not None:
            self.worker.forget()
        self.keylock.rebuild(model.vocabulary)
        self._grammar = None  # its masks are the old vocabulary's

    # -- reporting ----------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The responder's part of the view's snapshot."""
        latencies = sorted(self.lookahead.recent_latencies)
        return {
            "key": self.keylock.shown,
            "key_lock": self.keylock.enabled,
            "notes_model": self.notes,
            "provider": getattr(self.model, "provider", "cpu"),
            "model": getattr(self.model, "name", ""),
            "temperature": self.temperature,
            "variation": self.variation,
            "step_latency_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
            "step_latency_p99_ms": percentile(latencies, 99) * 1e3,
            "late_steps": self.lookahead.late_steps,
            "last_tokens": tuple(self.timeline.tokens(last=8)),
        }

    def figures(self) -> dict[str, float]:
        """Figures of the whole run: played steps, inference latency, send error against the grid."""
        latencies = list(self.lookahead.latencies)
        errors = list(self.emission_errors)
        return {
            "played_steps": self.played_steps,
            "late_steps": self.lookahead.late_steps,
            "latency_median_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
            "latency_p99_ms": percentile(latencies, 99) * 1e3,
            "emission_median_ms": statistics.median(errors) * 1e3 if errors else 0.0,
            "emission_p99_ms": percentile(errors, 99) * 1e3,
        }
