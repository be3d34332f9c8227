"""Look-ahead: the next token computed on the inference thread, the one owner of the stepper and the sampler.

Grid and look-ahead
    The engine starts computing the model's token for step ``n + 1`` as soon as the window for it is
    known: right after boundary ``n`` is sent (seed models: the model's token at ``n`` enters the
    window when sent), or when step ``n`` closes half a step later (grid models: step ``n``'s token
    is made from everything that sounded in it). At boundary ``n + 1`` the token is normally long
    ready, so the boundary only sends messages.

Overload rule (documented, counted)
    When the token for step ``n`` is not ready at its grid time the grid does not wait: step ``n``
    stays silent (``late_steps`` += 1) and the token, once ready, is played at the next grid step
    instead (if the model should still play then). No step is ever sent late and the grid never
    moves, so a model slower than a grid step plays every other step (or fewer), on the grid. No
    second token is computed while one is pending.

One owner
    The stepper and the :class:`lofi_live.model.sampling.Sampler` (its random generator and repetition
    memory) are touched only by the inference thread. The engine thread changes the sampler by
    message (:meth:`InferenceWorker.set_temperature`, :meth:`InferenceWorker.forget`), applied before
    the next token is sampled. A fault in the stepper or the sampler is handed to the engine thread
    with the job and stops the engine there. ``variation`` reaches the stepper's copy gate (a model
    that has one) and the loop follower the same way (:meth:`InferenceWorker.set_variation`).

Loop following (continue mode, grid models, ``--follow chord``)
    The first token of an answer carries the player's phrase (``Job.heard``): the inference thread's
    :class:`lofi_live.model.loop_follow.LoopFollower` takes its loop from it (a few ms, on this thread,
    half a step or more before the answer's first boundary), and each token of the answer is then
    chosen from the loop replayed at that point of its cycle and the network's variations within its
    chords (``--variation``), as ``generate`` continues a clip. A mutate's tokens are the network's alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np

from lofi_live.model import sampling
from lofi_live.model.loop_follow import DEFAULT_VARIATION, LoopFollower


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by the nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


class Job:
    """One look-ahead computation: the window as of a boundary -> the token for ``step``."""

    __slots__ = ("step", "end", "window", "allowed", "done", "token", "seconds", "cancelled", "error", "model",
                 "stream", "computed", "positions", "downbeat", "heard", "cycle")

    def __init__(self, step: int, end: int, window: list[int], allowed=None, model=None, stream: int = 0,
                 positions: list[int] | None = None, downbeat: int | None = None):
        self.step, self.end, self.window, self.allowed = step, end, window, allowed
        # ``model``: the model to run (None: the worker's); ``stream``: which token sequence ``end``
        # counts in (0 = the timeline, another number = a mutate's replayed context).
        self.model, self.stream = model, stream
        # ``positions``: each window token's place in its bar (0-7), for a model that reads them
        # (None: not known, the stepper's own default); ``downbeat``: the bar line they count from.
        self.positions, self.downbeat = positions, downbeat
        # loop following (:class:`lofi_live.model.loop_follow.LoopFollower`): ``heard``, the player's phrase
        # the response answers (its first token only); ``cycle``, this token's step counted from the
        # answer's start (None: the network alone)
        self.heard: list[int] | None = None
        self.cycle: int | None = None
        self.done = threading.Event()
        self.token: int | None = None
        self.seconds = 0.0
        self.computed = False  # by the inference thread (a loop's known token is not)
        self.cancelled = False
        self.error: BaseException | None = None


class InferenceWorker:
    """Computes tokens on its own thread with the model's stepper (O(1) per new timeline token).

    The stepper follows the timeline: tokens appended since the last job are fed with ``advance``;
    anything else (first job, a gap longer than the window, another stream or another model)
    rebuilds the state with ``reset``. Only the newest submitted job waits; an older one not yet
    started is dropped.
    """

    def __init__(self, model, sampler: sampling.Sampler, slow_ms: float = 0.0, variation: float = DEFAULT_VARIATION):
        self.model, self.slow = model, slow_ms / 1000.0
        self._sampler = sampler  # the inference thread's alone from here on
        self.variation = variation
        self.stepper = self._stepper(model)
        self._follower: LoopFollower | None = None  # made on the first phrase to follow (inference thread)
        self._stream = 0
        self._downbeat: int | None = None  # the bar line the stepper's positions count from
        self._fed_end = -1
        self._probs = None
        self._cond = threading.Condition()
        self._next: Job | None = None
        self._changes: list[tuple[str, float]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="lofi-inference", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._next is not None:
                self._next.cancelled = True
                self._next.done.set()
            self._next = job
            self._cond.notify()

    def set_temperature(self, value: float) -> None:
        """Sample with ``value`` from the next token on."""
        with self._cond:
            self._changes.append(("temperature", float(value)))

    def set_variation(self, value: float) -> None:
        """Weigh the network against the heard loop (and a copy gate) with ``value`` from the next token on."""
        with self._cond:
            self._changes.append(("variation", float(value)))

    def forget(self) -> None:
        """Clear the sampler's repetition memory before the next token (its indices changed)."""
        with self._cond:
            self._changes.append(("forget", 0.0))

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._next is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._next = self._next, None
                changes, self._changes = self._changes, []
            start = time.perf_counter()
            try:
                for name, value in changes:
                    if name == "temperature":
                        self._sampler.temperature = value
                    elif name == "variation":
                        self._set_variation(value)
                    else:
                        self._sampler.forget()
                if self.slow:
                    time.sleep(self.slow)
                job.token = self.compute(job)
            except BaseException as error:  # noqa: BLE001 - handed to the engine thread, which stops
                job.error = error
            job.seconds = time.perf_counter() - start
            job.computed = True
            job.done.set()

    def _stepper(self, model):
        """A stepper of ``model``, its copy gate (if it has one) set to the variation."""
        stepper = model.stepper()
        if getattr(model, "has_copy_gate", False):
            stepper.variation = self.variation
        return stepper

    def _set_variation(self, value: float) -> None:
        self.variation = value
        if getattr(self.model, "has_copy_gate", False):
            self.stepper.variation = value
        if self._follower is not None:
            self._follower.variation = value

    def _choose(self, job: Job, probs) -> int:
        """The token: sampled from the network's ``probs``, or, while a heard loop is followed, from
        the loop and the network's variations on it (the follower takes the sampler's legato over for
        the network's share, as ``generate`` does)."""
        follower = self._follower
        if job.heard is not None:
            # a network with a copy gate copies the loop itself: the rule then keeps it to the loop's chords
            # and groove only (as generate does)
            replay = not getattr(self.model, "has_copy_gate", False)
            if follower is None or follower.vocabulary != list(self.model.vocabulary) or follower.replay != replay:
                follower = self._follower = LoopFollower(self.model.vocabulary, self.variation, replay=replay)
            follower.hear(job.heard)
        if job.cycle is None or follower is None or not follower.active:
            return int(self._sampler.choose(probs, job.allowed))
        follower.seek(job.cycle)
        follower.legato = self._sampler.legato
        probs, mask = follower.shape(probs, job.allowed)
        legato, self._sampler.legato = self._sampler.legato, 0.0
        try:
            token = int(self._sampler.choose(probs, mask))
        finally:
            self._sampler.legato = legato
        follower.add(token)
        return token

    def compute(self, job: Job) -> int:
        if job.model is not None and job.model is not self.model:  # model_select: switch here
            self.model, self.stepper, self._probs = job.model, self._stepper(job.model), None
            # the repetition guard and legato follow the new vocabulary's holds and rests
            self._sampler.follow(job.model.vocabulary)
        gap = job.end - self._fed_end
        window = job.window
        # a model that reads bar positions gets one beside each token (lofi_live.live.bars); a bar line
        # found since the stepper was fed (the player's first onset) re-reads the window with it
        positions = job.positions if getattr(self.model, "uses_position", False) else None
        if (self._probs is None or job.stream != self._stream or gap < 0 or gap > len(window)
                or gap >= self.stepper.window or (positions is not None and job.downbeat != self._downbeat)):
            self._stream, self._downbeat = job.stream, job.downbeat
            probs = self.stepper.reset(window) if positions is None else self.stepper.reset(window, positions=positions)
        else:
            probs = self._probs
            for offset in range(len(window) - gap, len(window)):
                if positions is None:
                    probs = self.stepper.advance(window[offset])
                else:
                    probs = self.stepper.advance(window[offset], position=positions[offset])
        self._fed_end, self._probs = job.end, probs
        return self._choose(job, probs)


class LookAhead:
    """The engine thread's side: the one pending job, late steps, and measured latencies."""

    def __init__(self, worker: InferenceWorker | None = None):
        self.worker = worker
        self.job: Job | None = None
        self.late_steps = 0
        self.latencies: deque[float] = deque(maxlen=20000)  # the whole run's, for the figures at exit
        self.recent_latencies: deque[float] = deque(maxlen=256)  # the view's

    def submit(self, job: Job) -> None:
        self.job = job
        if self.worker is not None:
            self.worker.submit(job)

    def ready(self, job: Job) -> None:
        """A job whose token is already known (a loop): nothing to compute."""
        job.done.set()
        self.job = job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancelled = True
            self.job = None

    def drop_done(self) -> None:
        """The model does not play this step: a finished token is dropped (a running one may still serve)."""
        if self.job is not None and self.job.done.is_set():
            self.job = None

    def take(self, step: int) -> tuple[int | None, bool]:
        """The token for ``step`` if it is ready, and whether the step is late (token not ready).

        A late job moves to the next step. A job that failed raises its error here, on the engine thread.
        """
        job = self.job
        if job is None:
            return None, False
        if job.cancelled:
            self.job = None
            return None, False
        if job.step > step:  # computed ahead for a later step (MIDI Start): not yet
            return None, False
        if not job.done.is_set():
            self.late_steps += 1
            job.step = step + 1
            return None, True
        self.job = None
        if job.error is not None:
            raise job.error
        if job.computed:
            self.latencies.append(job.seconds)
            self.recent_latencies.append(job.seconds)
        return job.token, False


class KeyLock:
    """``--key``/``--scale`` and the key_lock control: which tokens the sampler may choose.

    The lock itself is :func:`lofi_live.model.sampling.key_lock`, the rule ``generate`` uses too. ``auto``
    listens: the key is detected again from the last 64 tokens of the timeline when the model is about to
    play and at least 8 tokens came since the last detection.
    """

    def __init__(self, vocabulary: Sequence[str], key: str | None, scale: str | None):
        self.vocabulary = list(vocabulary)
        self.setting, self.scale = key, scale
        self.enabled = key is not None
        self.name: str | None = None
        self.allowed: np.ndarray | None = None
        self._checked = -1
        self._fix()

    def _fix(self) -> None:
        if self.setting is None or self.setting == "auto":
            return
        self._take(sampling.key_lock(self.vocabulary, self.setting, self.scale))

    def _take(self, lock: sampling.ScaleLock) -> None:
        self.allowed, self.name = lock.mask, sampling.key_name(lock.key_pc, lock.scale)

    def toggle(self, value: Any) -> None:
        """key_lock: on/off (None flips); on without ``--key`` means ``auto``."""
        self.enabled = not self.enabled if value is None else bool(value)
        self._checked = -1
        if self.enabled and self.setting is None:
            self.setting = "auto"

    def rebuild(self, vocabulary: Sequence[str]) -> None:
        """Another model's vocabulary (model_select)."""
        self.vocabulary = list(vocabulary)
        self.allowed, self.name, self._checked = None, None, -1
        self._fix()

    def mask(self, timeline: Any) -> np.ndarray | None:
        """The allowed tokens now (None: no lock); ``auto`` listens to ``timeline`` (a Timeline)."""
        if not self.enabled:
            return None
        if self.setting == "auto" and (timeline.count - self._checked >= 8 or self.allowed is None):
            self._checked = timeline.count
            tokens = timeline.tokens()
            if tokens:
                self._take(sampling.key_lock(self.vocabulary, "auto", self.scale, tokens[-64:]))
        return self.allowed

    @property
    def shown(self) -> str | None:
        """What the view shows: the key, ``auto`` until detected, None (``free``) when unlocked."""
        return (self.name or "auto") if self.enabled else None
