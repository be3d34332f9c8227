"""Loading and checking an exported model (ONNX + JSON), provider choice, window and step predictors.

The contract is ``docs/MODEL_FORMAT.md``. Loading never trusts the files: the JSON is validated field by
field (:func:`lofi_live.model.format.check`, the code the export checks its own JSON with), each ONNX file
must match the SHA-256 recorded in the JSON, and the graphs' inputs and outputs must agree with the JSON
(names, element types, window length, vocabulary size). Every problem becomes a one-line
:class:`LofiError` naming the file and the reason.

Two predictors, which read a context shorter than the window alike: as it is, from zero state
(docs/MODEL_FORMAT.md, "Short contexts"):

* :meth:`Model.window_probs` runs the window graph on a batch of contexts (evaluation, bench, fallback);
* :meth:`Model.stepper` returns a :class:`Stepper`: O(1) per token through the step graph, carrying the
  LSTM states between calls (or, for a model without a step graph, a :class:`WindowStepper` that runs the
  window graph on the last ``window`` tokens each step).

Provider choice (``provider=``): ``"cpu"``; ``"cuda"`` (a :class:`LofiError` when CUDA cannot be used);
``"auto"``: CUDA is only considered when onnxruntime offers the CUDA provider, the NVIDIA driver and
the provider's libraries load (checked with ``ctypes``, so a CPU-only machine logs nothing) and a session
really initialises on it; it is then timed against the CPU on batch-1 steps of the live graph and the
faster one is used (for small LSTMs that is the CPU: a kernel launch and a host/device copy per step
cost more than the whole step on one core).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lofi_live.model import format as model_format
from lofi_live.errors import LofiError
from lofi_live.files import checked_file
from lofi_live.model.format import (
    META_VOCABULARY,
    META_WINDOW,
    Graph,
    encode_inputs,
    encode_tokens,
    state_output,
    vocabulary_digest,
)
from lofi_live.model import pointer as pointer_graphs
from lofi_live.model.pointer import PointerStepper, check_variation, default_positions, mix
from lofi_live.model.paths import (  # noqa: F401 - re-exported: commands and tests import them from here
    DEFAULT_MODEL,
    MODEL_ENV,
    MODEL_HELP,
    SHIPPED_MODELS_PACKAGE,
    default_model_path,
    resolve_model_path,
    shipped_model_names,
    shipped_models_dir,
)
from lofi_live.model.providers import PROVIDERS, cuda_problem
from lofi_live.model.providers import session as _session
from lofi_live.model.steppers import Stepper, WindowStepper, repeat_to_window

#: Model descriptions above this size are refused (a real one is well under 1 MB).
MAX_JSON_BYTES = 64 * 1024 * 1024

def _fail(where: Path | str, reason: str) -> LofiError:
    return LofiError(f"{where}: {reason}")


# --------------------------------------------------------------------------------------------
# JSON checks


def _read_json(path: Path) -> dict:
    onnx = path.with_suffix(".onnx")
    hint = f" ({onnx.name} exists but its JSON is missing)" if onnx.exists() else ""
    checked_file(path, "a model description", MAX_JSON_BYTES,
                 missing=f"no such model{hint}; export one with `lofi-train export RUN -o NAME` or pass --model")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _fail(path, "not a model description (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise _fail(path, f"not valid JSON (line {error.lineno}: {error.msg})") from None
    except RecursionError:
        raise _fail(path, "not a model description (JSON nested too deeply)") from None
    except ValueError as error:  # e.g. an integer with too many digits
        raise _fail(path, f"not valid JSON ({str(error).splitlines()[0][:120]})") from None
    except OSError as error:
        raise _fail(path, f"cannot be read ({error.strerror or error})") from None
    if not isinstance(meta, dict):
        raise _fail(path, "not a model description (expected a JSON object)")
    return meta


def _read_graph(json_path: Path, graph: Graph, name: str) -> tuple[Path, bytes]:
    """The bytes of a graph named in the JSON, refused unless they match its recorded SHA-256."""
    path = json_path.with_name(graph.file)
    if not path.is_file():
        raise _fail(path, f"missing ({name} graph named in {json_path.name})")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _fail(path, f"cannot be read ({error.strerror or error})") from None
    if hashlib.sha256(data).hexdigest() != graph.sha256:
        raise _fail(path, f"checksum differs from {json_path.name} (file changed, truncated or damaged)")
    return path, data


def _dims(node) -> list:
    """Static dims as ints, symbolic ones as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in (node.shape or [])]


# --------------------------------------------------------------------------------------------
# The model


class Model:
    """An exported model, checked and ready to predict. Create it with :meth:`Model.load`."""

    name: str
    vocabulary: list[str]
    index: dict[str, int]
    window: int
    grid_beats: float
    #: ``seed`` (onset tokens only, the seed article's) or ``grid`` (one token per step, hold and rest)
    tokens: str
    encoding: str
    meta: dict
    provider: str
    path: Path

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, provider: str = "auto", window_threads: int = 1) -> "Model":
        """Load and check ``NAME.json`` and its graphs; ``provider`` is ``auto``, ``cpu`` or ``cuda``.

        Both graphs run on one intra-op thread by default: a batch-1 LSTM step gains nothing from a
        thread pool, and idle pool threads spinning beside the live engine's own threads cost latency
        on a 2-core laptop (measured on a busy 2-core machine, `small` preset: the window graph's batch-1
        p99 was 3.5-5 ms on one thread and 60-110 ms on two). ``window_threads=0`` (all cores) suits
        batch evaluation.
        """
        if provider not in PROVIDERS:
            raise LofiError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
        if provider == "cuda" and (problem := cuda_problem()):
            raise LofiError(f"--provider cuda: CUDA is not usable here: {problem}")
        json_path = resolve_model_path(path)
        meta = _read_json(json_path)
        self = cls.__new__(cls)
        self.path, self.meta = json_path, meta
        described = model_format.check(meta, json_path)
        self.name, self.vocabulary, self.window = described.name, described.vocabulary, described.window
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        self.grid_beats, self.tokens, self.encoding = described.grid_beats, described.tokens, described.encoding
        self.seed_windows, self._baselines = described.seed_windows, described.baselines
        self.loop_cache = described.loop_cache
        self.pointer = described.pointer
        self._positions = described.position
        window_graph, step_graph = described.window_graph, described.step_graph

        window_file, window_bytes = _read_graph(json_path, window_graph, "window")
        step_file = step_bytes = None
        if step_graph is not None:
            step_file, step_bytes = _read_graph(json_path, step_graph, "step")

        # The live graph decides the provider under "auto".
        chosen = "cpu"
        if provider == "cuda":
            chosen = "cuda"
        elif provider == "auto" and cuda_problem() is None:
            chosen = self._time_providers(step_file or window_file, step_bytes or window_bytes, step_graph or window_graph, step_graph is not None)
        self.provider = chosen
        self._window_session = _session(window_bytes, window_file, chosen, threads=window_threads)
        self._window_in, self._window_out = self._check_window_graph(window_file, window_graph)
        self._check_binding(window_file, self._window_session)
        self._step_session = None
        self.states: list[tuple[str, int]] = []
        if step_graph is not None:
            self._step_session = _session(step_bytes, step_file, chosen, threads=1)
            self._check_step_graph(step_file, step_graph)
            self._check_binding(step_file, self._step_session)
        return self

    # -- checks ---------------------------------------------------------------------------------

    def _check_binding(self, where: Path, session) -> None:
        """The graph's recorded vocabulary digest and window (when exported with them) match the JSON."""
        try:
            recorded = dict(session.get_modelmeta().custom_metadata_map or {})
        except Exception:  # noqa: BLE001 - no metadata: an older export, nothing to compare
            return
        digest = recorded.get(META_VOCABULARY)
        if digest is not None and digest != vocabulary_digest(self.vocabulary):
            raise _fail(self.path, f"vocabulary differs from the one {where.name} was exported with "
                                   "(the JSON was edited or belongs to another model)")
        window = recorded.get(META_WINDOW)
        if window is not None and window != str(self.window):
            raise _fail(self.path, f"window {self.window} differs from the {window} that {where.name} was exported with")

    def _input_spec(self, batch: int, length: int) -> tuple[tuple[int, ...], np.dtype]:
        if self.encoding == "index":
            return (batch, length), np.dtype(np.int32)
        return (batch, length, 1), np.dtype(np.float32)

    def _check_input(self, where: Path, node, name: str, length: int) -> None:
        if node.name != name:
            raise _fail(where, f"graph input is {node.name!r}, the JSON says {name!r}")
        expected = "tensor(int32)" if self.encoding == "index" else "tensor(float)"
        if node.type != expected:
            raise _fail(where, f"input {name!r} is {node.type}, but input_encoding {self.encoding!r} needs {expected}")
        dims = _dims(node)
        rank = 2 if self.encoding == "index" else 3
        if len(dims) != rank or (dims[1] is not None and dims[1] != length) or (rank == 3 and dims[2] not in (None, 1)):
            shape = "[N, %d]" % length if rank == 2 else "[N, %d, 1]" % length
            raise _fail(where, f"input {name!r} has shape {list(node.shape)}, expected {shape}")

    def _check_window_graph(self, where: Path, graph: Graph) -> tuple[str, str]:
        session = self._window_session
        in_name, out_name = graph.input, graph.output
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if self.uses_position:
            pointer_graphs.check_window_graph(self, where, session)
        elif len(inputs) != 1:
            raise _fail(where, f"the window graph has {len(inputs)} inputs, expected 1 ({in_name!r})")
        else:
            self._check_input(where, inputs[0], in_name, self.window)
        names = [o.name for o in outputs]
        if out_name not in names:
            raise _fail(where, f"no output {out_name!r} (outputs: {', '.join(names)})")
        size = len(self.vocabulary)
        if self.uses_position:
            zeros = np.zeros((1, self.window), np.int32)
            probs = session.run([out_name], {"tokens": zeros, "positions": zeros})[0]
        else:
            probs = self._run_window(np.zeros((1, self.window), np.int64), session, in_name, out_name)
        if probs.shape != (1, size):
            raise _fail(where, f"output size {probs.shape[-1]} differs from the vocabulary size {size} in {self.path.name}")
        if not np.all(np.isfinite(probs)) or abs(float(probs.sum()) - 1) > 1e-3:
            raise _fail(where, "output is not a probability distribution (softmax)")
        self._window_batch_fixed = _dims(inputs[0])[0]
        self._window_length_fixed = _dims(inputs[0])[1]
        return in_name, out_name

    def _check_step_graph(self, where: Path, graph: Graph) -> None:
        session = self._step_session
        in_name, out_name, states = graph.input, graph.output, graph.states
        inputs = {node.name: node for node in session.get_inputs()}
        if self.pointer is not None:
            self.states = [(name, units) for name, units in states]
            pointer_graphs.check_step_graph(self, where, session)
            return
        expected_inputs = [in_name] + [name for name, _ in states]
        if sorted(inputs) != sorted(expected_inputs):
            raise _fail(where, f"step graph inputs are {sorted(inputs)}, the JSON says {sorted(expected_inputs)}")
        self._check_input(where, inputs[in_name], in_name, 1)
        for name, units in states:
            node = inputs[name]
            dims = _dims(node)
            if node.type != "tensor(float)" or len(dims) != 2 or dims[1] not in (None, units):
                raise _fail(where, f"state input {name!r} is {node.type} {list(node.shape)}, expected float [N, {units}]")
        outputs = [node.name for node in session.get_outputs()]
        expected_outputs = [out_name] + [state_output(name) for name, _ in states]
        missing = [name for name in expected_outputs if name not in outputs]
        if missing:
            raise _fail(where, f"step graph lacks outputs {', '.join(missing)}")
        self.states = [(name, units) for name, units in states]
        self._step_in, self._step_out = in_name, out_name
        self._step_outputs = expected_outputs
        self._step_batch_fixed = _dims(inputs[in_name])[0]
        stepper = Stepper(self)
        probs = stepper.advance(0)
        if probs.shape != (len(self.vocabulary),):
            raise _fail(where, f"step output size {probs.shape[-1]} differs from the vocabulary size {len(self.vocabulary)}")

    def _time_providers(self, where: Path, data: bytes, graph: Graph, is_step: bool) -> str:
        """Batch-1 latency of the live graph on CUDA against the CPU; the faster wins (ties: CPU)."""
        try:
            cuda = _session(data, where, "cuda", threads=1)
        except LofiError:
            return "cpu"
        cpu = _session(data, where, "cpu", threads=1)
        feeds = {}
        for node in cpu.get_inputs():
            shape = [1] + [d if isinstance(d, int) and d > 0 else 1 for d in (node.shape or [])[1:]]
            if not is_step and node.name == graph.input and len(shape) >= 2:
                shape[1] = self.window
            dtype = np.int32 if node.type == "tensor(int32)" else np.int64 if node.type == "tensor(int64)" else np.float32
            feeds[node.name] = np.zeros(shape, dtype)

        def median(session) -> float:
            times = []
            for _ in range(60):
                start = time.perf_counter()
                session.run(None, feeds)
                times.append(time.perf_counter() - start)
            return float(np.median(times[10:]))

        try:
            return "cuda" if median(cuda) < median(cpu) else "cpu"
        except Exception:  # noqa: BLE001 - a CUDA failure at run time: stay on the CPU
            return "cpu"

    # -- encoding and prediction ----------------------------------------------------------------

    @property
    def has_step_graph(self) -> bool:
        return self._step_session is not None

    @property
    def uses_position(self) -> bool:
        """Whether the model reads each step's position in the 4/4 bar beside its token (``"position": true``)."""
        return self._positions

    @property
    def has_copy_gate(self) -> bool:
        """Whether the model copies from its window through a gate that ``variation`` moves (a ``pointer`` section)."""
        return self.pointer is not None

    @property
    def free_length(self) -> bool:
        """Whether the window graph takes contexts of any length up to ``window`` (every export since short
        contexts were defined); an older window graph takes exactly ``window`` tokens."""
        return self._window_length_fixed is None

    @property
    def baselines(self) -> dict | None:
        return self._baselines

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token strings -> vocabulary indices; an unknown token becomes the nearest known one.

        :func:`lofi_live.model.format.encode_tokens`, the rule training uses too: a malformed token
        raises :class:`lofi_live.tokens.rules.TokenError` naming it.
        """
        return encode_tokens(tokens, self.vocabulary, self.index).tolist()

    def decode(self, indices: Sequence[int]) -> list[str]:
        return [self.vocabulary[int(i)] for i in indices]

    def feed(self, windows: np.ndarray) -> np.ndarray:
        """Token indices shaped ``(N, L)`` -> the graph's input array for this model's encoding."""
        return encode_inputs(windows, self.encoding, len(self.vocabulary))

    def _run_window(self, windows, session=None, in_name=None, out_name=None) -> np.ndarray:
        session = session or self._window_session
        return session.run([out_name or self._window_out], {in_name or self._window_in: self.feed(windows)})[0]

    def window_probs(self, windows: np.ndarray, positions: np.ndarray | None = None, batch: int = 1024,
                     cache: bool = True, variation: float | None = None) -> np.ndarray:
        """Next-token probabilities ``(N, V)`` for contexts of token indices ``(N, L)``, ``1 <= L <= window``.

        A context shorter than the window is read as it is, from zero state (docs/MODEL_FORMAT.md, "Short
        contexts"), the same answer a :class:`Stepper` gives after those tokens. With ``cache`` (the
        default, as played) the model's loop cache is mixed in; ``cache=False`` gives the network alone.
        ``positions`` (same shape, bar positions 0-7) feed a model that :attr:`uses_position`; left out, each
        context's first token is on a downbeat. ``variation`` moves a copy gate (:mod:`lofi_live.model.pointer`;
        None: the network's own); models without one ignore both.
        """
        windows = np.asarray(windows)
        variation = check_variation(variation)
        if windows.ndim == 1:
            windows = windows[None, :]
            positions = None if positions is None else np.asarray(positions)[None, :]
        if windows.ndim != 2 or not 1 <= windows.shape[1] <= self.window:
            raise ValueError(f"windows must be shaped (N, L) with 1 <= L <= {self.window}, got {windows.shape}")
        if len(windows) and (windows.min() < 0 or windows.max() >= len(self.vocabulary)):
            raise ValueError("token index outside the vocabulary")
        if self.uses_position:
            steps = (np.tile(default_positions(windows.shape[1]), (len(windows), 1)) if positions is None
                     else np.asarray(positions))
            if steps.shape != windows.shape:
                raise ValueError(f"positions shaped {steps.shape} differ from the windows' {windows.shape}")
            probs = self._pointer_probs(windows, steps % 8, batch, variation)
        else:
            probs = self._network_probs(windows, batch)
        if cache and self.loop_cache.active:
            probs = np.stack([self.loop_cache.mix(row, window) for row, window in zip(probs, windows)])
        return probs

    def _pointer_probs(self, contexts: np.ndarray, positions: np.ndarray, batch: int,
                       variation: float | None) -> np.ndarray:
        """A position (and copy-gate) model's window graph on checked contexts, mixed under ``variation``."""
        names = list(pointer_graphs.POINTER_OUTPUTS) if self.has_copy_gate else [self._window_out]
        found = []
        for i in range(0, len(contexts), batch):
            feeds = {"tokens": contexts[i:i + batch].astype(np.int32), "positions": positions[i:i + batch].astype(np.int32)}
            out = self._window_session.run(names, feeds)
            found.append(mix(out[1], out[2], out[3], variation) if self.has_copy_gate else out[0])
        return np.concatenate(found) if found else np.zeros((0, len(self.vocabulary)), np.float32)

    def _network_probs(self, contexts: np.ndarray, batch: int = 1024) -> np.ndarray:
        """The network's probabilities for checked contexts ``(N, L)``, under the short-context rule.

        A window graph of free length reads any context directly. An older fixed-length window graph
        cannot take a short one, so a short context goes to the step graph from zero state (the same
        reading); a model with neither (a fixed-length window graph alone) reads it repeated to fill
        the window (:func:`repeat_to_window`), its one documented exception.
        """
        if len(contexts) == 0:
            return np.zeros((0, len(self.vocabulary)), np.float32)
        if contexts.shape[1] < self.window and not self.free_length:
            if self.has_step_graph:
                return self._read_from_zero(contexts)[0]
            contexts = repeat_to_window(contexts, self.window)
        if self._window_batch_fixed == 1:
            batch = 1
        return np.concatenate([self._run_window(contexts[i : i + batch]) for i in range(0, len(contexts), batch)])

    def _read_from_zero(self, contexts: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Contexts ``(N, L)`` fed to the step graph token by token from zero state: (probabilities after
        the last token ``(N, V)``, the LSTM states then, in ``self.states`` order)."""
        if self._step_batch_fixed == 1 and len(contexts) > 1:
            rows = [self._read_from_zero(contexts[i : i + 1]) for i in range(len(contexts))]
            return (np.concatenate([probs for probs, _ in rows]),
                    [np.concatenate(parts) for parts in zip(*(states for _, states in rows))])
        names = [name for name, _ in self.states]
        states = [np.zeros((len(contexts), units), np.float32) for _, units in self.states]
        inputs = self.feed(contexts)
        for t in range(contexts.shape[1]):
            feeds = {self._step_in: np.ascontiguousarray(inputs[:, t : t + 1]), **dict(zip(names, states))}
            outputs = self._step_session.run(self._step_outputs, feeds)
            states = outputs[1:]
        return outputs[0], states

    def stepper(self) -> "Stepper | WindowStepper | PointerStepper":
        """A fresh incremental predictor (step graph when exported, else the window graph)."""
        if self.has_copy_gate and self.has_step_graph:
            return PointerStepper(self)
        return Stepper(self) if self.has_step_graph else WindowStepper(self)

    def __repr__(self) -> str:
        graph = "step+window" if self.has_step_graph else "window"
        return f"<Model {self.name!r} V={len(self.vocabulary)} window={self.window} {graph} on {self.provider}>"
