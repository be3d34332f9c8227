"""The exported model format, described once: what ``lofi-train export`` writes and ``Model.load`` reads.

``docs/MODEL_FORMAT.md`` is the prose; this module is the code both sides run. :func:`describe` builds
the JSON description an export writes, :func:`check` validates one field by field (every problem a
one-line :class:`LofiError` naming the file and the field) and returns it as a :class:`Description`.
The export checks its own description with :func:`check` before writing it, so a model it writes is a
model the runtime loads.

The rules of a model's inputs live here too, because the training side must feed its Keras model
exactly what the runtime feeds the exported graphs: :func:`encode_tokens` (token strings -> vocabulary
indices, an unknown token as its nearest known one) and :func:`encode_inputs` (indices -> the graph's
input array, ``index`` or the seed article's ``scaled`` encoding). This module imports neither
TensorFlow nor ONNX Runtime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lofi_live.tokens import rules as token_rules
from lofi_live.errors import LofiError
from lofi_live.model.loop_cache import LoopCache

#: The format this runtime reads and the export writes.
FORMAT = 1
#: How a token index enters the graphs: ``index`` (int32 ``i``) or ``scaled`` (float32 ``i / V``, the seed's).
ENCODINGS = ("index", "scaled")
#: Longest window a description may declare.
MAX_WINDOW = 4096
#: ONNX metadata keys that bind a graph to its JSON: the SHA-256 of the vocabulary (:func:`vocabulary_digest`)
#: and the window length. The JSON records each graph's SHA-256, so neither file can be edited or swapped
#: without the other noticing.
META_VOCABULARY = "lofi_live.vocabulary_sha256"
META_WINDOW = "lofi_live.window"
#: Default input and output names of the graphs (a description may name others).
WINDOW_INPUT, STEP_INPUT, OUTPUT = "tokens", "token", "probs"


# --------------------------------------------------------------------------------------------
# Inputs


def encode_tokens(
    tokens: Sequence[str], vocabulary: Sequence[str], index: Mapping[str, int], resolved: dict[str, int] | None = None
) -> np.ndarray:
    """Token strings -> vocabulary indices (int32); an unknown token becomes its nearest vocabulary token.

    ``index`` maps each vocabulary token to its position and is only read. ``resolved`` remembers the
    unknown tokens met (pass one dict across calls so each is resolved once). A malformed token (neither
    a note, a chord, ``hold`` nor ``rest``) raises :class:`lofi_live.tokens.rules.TokenError` naming it: tokens
    come from the tokenizers, so a malformed one is a fault to report, never something to skip.
    """
    resolved = {} if resolved is None else resolved
    out = np.empty(len(tokens), dtype=np.int32)
    for position, token in enumerate(tokens):
        found = index.get(token)
        if found is None:
            found = resolved.get(token)
            if found is None:
                found = index[token_rules.nearest_token(token, vocabulary)]
                resolved[token] = found
        out[position] = found
    return out


def encode_inputs(indices: np.ndarray, encoding: str, vocab: int) -> np.ndarray:
    """Token indices ``[..., T]`` -> the graph's input: int32 as they are (``index``), or float32
    ``i / vocab`` with a trailing axis of 1 (``scaled``, the seed article's input).

    The one place the scaled encoding is computed: training feeds Keras these arrays and the runtime
    feeds the ONNX graphs the same ones, so both see bit-identical inputs.
    """
    indices = np.asarray(indices)
    if encoding == "index":
        return indices.astype(np.int32, copy=False)
    if encoding != "scaled":
        raise ValueError(f"unknown input encoding {encoding!r}")
    return (indices.astype(np.float32) / np.float32(vocab))[..., None]


def vocabulary_digest(vocabulary: Sequence[str]) -> str:
    """SHA-256 of the vocabulary in order (tokens joined by newlines): stored in the ONNX graphs' metadata."""
    return hashlib.sha256("\n".join(vocabulary).encode("utf-8")).hexdigest()


def state_names(units: Sequence[int]) -> list[tuple[str, int]]:
    """The step graph's state inputs for LSTM layers of ``units`` (input side first): ``h0, c0, h1, c1, ...``."""
    return [(f"{kind}{k}", size) for k, size in enumerate(units) for kind in ("h", "c")]


def state_output(name: str) -> str:
    """The step graph's output carrying state input ``name`` on: ``h0`` -> ``h0_out``."""
    return f"{name}_out"


# --------------------------------------------------------------------------------------------
# The description


@dataclass(frozen=True)
class Graph:
    """One graph entry of ``graphs``: the ONNX file beside the JSON, its checksum and its tensor names."""

    file: str
    sha256: str
    input: str
    output: str
    #: the step graph's LSTM states as (input name, units), empty for the window graph
    states: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, file: str, data: bytes, units: Sequence[int] | None = None) -> "Graph":
        """The entry of a window graph (``units`` None) or of a step graph with LSTM layers of ``units``."""
        step = units is not None
        return cls(file, hashlib.sha256(data).hexdigest(), STEP_INPUT if step else WINDOW_INPUT, OUTPUT,
                   tuple(state_names(units)) if step else ())

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": self.file, "sha256": self.sha256, "input": self.input, "output": self.output}
        if self.states:
            entry["states"] = [[name, units] for name, units in self.states]
        return entry


@dataclass(frozen=True)
class Description:
    """A checked ``NAME.json``: the fields the runtime uses (``meta`` keeps the whole object)."""

    name: str
    vocabulary: list[str]
    window: int
    grid_beats: float
    tokens: str
    encoding: str
    window_graph: Graph
    step_graph: Graph | None
    seed_windows: list[list[int]]
    baselines: dict | None
    loop_cache: LoopCache
    meta: dict
    #: whether the graphs read each step's bar position beside its token
    position: bool = False
    #: the copy head's sizes (``units``, ``key_dim``) of a model that copies from its window, else None
    pointer: dict | None = None


def describe(
    *,
    name: str,
    preset: str,
    window: int,
    tokens: str,
    encoding: str,
    vocabulary: Sequence[str],
    window_graph: Graph,
    step_graph: Graph | None,
    seed_windows: Sequence[Sequence[int]],
    loop_cache: LoopCache,
    baselines: Mapping[str, Any],
    data: Mapping[str, Any],
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    pointer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of an exported model (docs/MODEL_FORMAT.md), field order as written."""
    graphs = {"window": window_graph.to_json()}
    if step_graph is not None:
        graphs["step"] = step_graph.to_json()
    return {
        "format": FORMAT,
        "name": name,
        "preset": preset,
        "window": window,
        "grid_beats": token_rules.GRID_BEATS,
        "tokens": tokens,
        "input_encoding": encoding,
        **({"position": True, "pointer": dict(pointer)} if pointer is not None else {}),
        "vocabulary": list(vocabulary),
        "graphs": graphs,
        "seed_windows": [[int(i) for i in w] for w in seed_windows],
        "loop_cache": {"weight": loop_cache.weight, "decay": loop_cache.decay},
        "baselines": dict(baselines),
        "data": dict(data),
        "metrics": dict(metrics),
        "training": dict(training),
    }


def check(meta: Any, where: Path) -> Description:
    """Validate a parsed ``NAME.json`` (``where`` names it in errors); fields a format-1 file may omit get
    their defaults. Unknown extra fields are ignored. Raises a one-line :class:`LofiError` on the first problem."""
    if not isinstance(meta, dict):
        raise _fail(where, "not a model description (expected a JSON object)")
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT:
        raise _fail(where, f"model format {fmt!r} is not supported (this runtime reads format {FORMAT})")
    vocabulary = _vocabulary(meta, where)
    window = _require(meta, "window", int, where)
    if not 1 <= window <= MAX_WINDOW:
        raise _fail(where, f"window {window} out of range")
    grid_beats = _number(meta, "grid_beats", token_rules.GRID_BEATS, where)
    if not 0 < grid_beats <= 16:
        raise _fail(where, f"grid_beats {grid_beats} out of range")
    tokens = meta.get("tokens", "seed")
    if tokens not in token_rules.TOKENIZATIONS:
        raise _fail(where, f"unknown tokens {tokens!r} (expected {' or '.join(token_rules.TOKENIZATIONS)})")
    encoding = meta.get("input_encoding", "index")
    if encoding not in ENCODINGS:
        raise _fail(where, f"unknown input_encoding {encoding!r} (expected {' or '.join(ENCODINGS)})")
    graphs = _require(meta, "graphs", dict, where)
    if not isinstance(graphs.get("window"), dict):
        raise _fail(where, "graphs.window is missing")
    if graphs.get("step") is not None and not isinstance(graphs["step"], dict):
        raise _fail(where, "graphs.step must be an object")
    seed_windows = _seed_windows(meta, where, window, len(vocabulary))
    baselines = _baselines(meta, where, len(vocabulary))
    loop_cache = _loop_cache(meta, where)
    window_graph = _graph(graphs["window"], "window", where)
    step_graph = _graph(graphs["step"], "step", where) if graphs.get("step") is not None else None
    position = meta.get("position", False)
    if not isinstance(position, bool):
        raise _fail(where, f"field 'position' must be true or false, not {position!r}")
    pointer = _pointer(meta, where)
    if pointer is not None and not position:
        raise _fail(where, "a model with a pointer section reads bar positions: 'position' must be true")
    if pointer is not None and step_graph is None:
        raise _fail(where, "a model with a pointer section needs its step graph (graphs.step)")
    return Description(str(meta.get("name") or where.stem), vocabulary, window, grid_beats, tokens, encoding,
                       window_graph, step_graph, seed_windows, baselines, loop_cache, meta, position, pointer)


def _pointer(meta: dict, where: Path) -> dict | None:
    """The optional ``pointer`` section: the copy head's ``units`` (LSTM state) and ``key_dim`` (cache keys)."""
    entry = meta.get("pointer")
    if entry is None:
        return None
    if not isinstance(entry, dict) or not all(_is_int(entry.get(k)) and entry[k] > 0 for k in ("units", "key_dim")):
        raise _fail(where, "pointer must be an object with positive integers units and key_dim")
    return {"units": entry["units"], "key_dim": entry["key_dim"]}


def _fail(where: Path | str, reason: str) -> LofiError:
    return LofiError(f"{where}: {reason}")


def _require(meta: dict, key: str, kind: type | tuple, where: Path) -> Any:
    if key not in meta:
        raise _fail(where, f"missing field {key!r}")
    value = meta[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _number(meta: dict, key: str, default: float, where: Path) -> float:
    value = meta.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _vocabulary(meta: dict, where: Path) -> list[str]:
    vocabulary = _require(meta, "vocabulary", list, where)
    if not vocabulary:
        raise _fail(where, "empty vocabulary")
    for token in vocabulary:
        if not isinstance(token, str):
            raise _fail(where, f"vocabulary entry {token!r} is not a string")
        try:
            token_rules.parse_token(token)
        except token_rules.TokenError as error:
            raise _fail(where, f"bad vocabulary entry: {error}") from None
    if len(set(vocabulary)) != len(vocabulary):
        raise _fail(where, "vocabulary has duplicate tokens")
    return list(vocabulary)


def _seed_windows(meta: dict, where: Path, window: int, size: int) -> list[list[int]]:
    windows = meta.get("seed_windows", [])
    if not isinstance(windows, list):
        raise _fail(where, "seed_windows must be a list of windows")
    for entry in windows:
        if not (isinstance(entry, list) and len(entry) == window and all(_is_int(i) and 0 <= i < size for i in entry)):
            raise _fail(where, f"seed_windows holds a window that is not {window} token indices")
    return windows


#: Optional successor tables of ``baselines``: field -> (what its entries index, how many values they take).
_SUCCESSORS = {
    "bigram_next": "token indices",
    "onset_bigram_next": "token indices",
    "bigram_rhythm_next": "rhythm class indices (0 onset, 1 hold, 2 rest)",
}


def _baselines(meta: dict, where: Path, size: int) -> dict | None:
    """``baselines`` is optional; when present it holds one count and one successor per token, and the
    grid tables (``onset_bigram_next``, ``bigram_rhythm_next``) when the export fitted them."""
    baselines = meta.get("baselines")
    if baselines is None:
        return None
    if not isinstance(baselines, dict):
        raise _fail(where, "baselines must be an object with unigram_counts and bigram_next")
    counts = baselines.get("unigram_counts")
    if (not isinstance(counts, list) or len(counts) != size
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise _fail(where, f"baselines.unigram_counts must be {size} non-negative numbers, one per token")
    for key, kind in _SUCCESSORS.items():
        table = baselines.get(key)
        if table is None and key != "bigram_next":
            continue
        limit = len(token_rules.RHYTHM_CLASSES) if key == "bigram_rhythm_next" else size
        if not isinstance(table, list) or len(table) != size or not all(_is_int(i) and -1 <= i < limit for i in table):
            raise _fail(where, f"baselines.{key} must be {size} {kind} (or -1), one per token")
    return baselines


def _loop_cache(meta: dict, where: Path) -> LoopCache:
    entry = meta.get("loop_cache")
    if entry is None:
        return LoopCache()
    if not isinstance(entry, dict):
        raise _fail(where, "loop_cache must be an object with weight and decay")
    weight, decay = entry.get("weight", 0.0), entry.get("decay", 0.9)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (weight, decay)):
        raise _fail(where, "loop_cache weight and decay must be numbers")
    if not (0.0 <= weight < 1.0 and 0.0 < decay <= 1.0):
        raise _fail(where, f"loop_cache weight {weight} must be in [0, 1) and decay {decay} in (0, 1]")
    return LoopCache(float(weight), float(decay))


def _graph(entry: dict, kind: str, where: Path) -> Graph:
    """One ``graphs`` entry: a plain file name beside the JSON, a SHA-256, names; a step graph's states."""
    file = entry.get("file")
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise _fail(where, f"graphs.{kind}.file must be a plain file name beside the JSON")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise _fail(where, f"graphs.{kind}.sha256 is missing or not a SHA-256 hex digest")
    names = {"input": entry.get("input", STEP_INPUT if kind == "step" else WINDOW_INPUT),
             "output": entry.get("output", OUTPUT)}
    for field, name in names.items():
        if not isinstance(name, str) or not name:
            raise _fail(where, f"graphs.{kind}.{field} must be a tensor name")
    states: tuple[tuple[str, int], ...] = ()
    if kind == "step":
        listed = entry.get("states")
        if not isinstance(listed, list) or not listed:
            raise _fail(where, "graphs.step.states must list the LSTM states, e.g. [['h0', 256], ['c0', 256]]")
        for item in listed:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and _is_int(item[1]) and item[1] > 0):
                raise _fail(where, f"graphs.step.states entry {item!r} is not [name, units]")
        states = tuple((name, units) for name, units in listed)
    return Graph(file, digest.lower(), names["input"], names["output"], states)
