"""Tiny exported models for tests, written straight with ``onnx.helper`` (no TensorFlow, a few ms each).

``build_model(folder, vocabulary, ...)`` writes ``NAME.onnx``, ``NAME.step.onnx`` and ``NAME.json``
following docs/MODEL_FORMAT.md: an embedding (``index``) or scaled input, stacked ONNX LSTM layers, a
dense softmax. The window graph takes exactly ``window`` tokens, as older exports do, or any number up to
it with ``free_length`` (as ``lofi-train export`` writes it now). Weights are random (seeded) so predictions are varied and deterministic. The step graph
is the same network on one token with the states as inputs and outputs, so it must reproduce the window
graph exactly when fed the window's tokens from zero state.

Tests skip when the ``onnx`` package (a training extra) is not installed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

#: A small vocabulary of real tokens: notes around middle C and common LoFi chords.
VOCABULARY = [
    "C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5", "E-4", "F#4", "G#4", "B-4", "C#4", "A3", "E3",
    "0.4.7", "9.0.4", "2.5.9", "7.11.2", "4.7.11", "5.9.0", "0.3.7", "11.2.5", "4.7.9.0", "9.0.2.5",
    "11.2.4.7", "4.5.9.0", "11.2.5.7", "11.0.4.7", "1.5.8", "3.7.10", "6.10.1", "8.0.3", "10.2.5",
]


def _onnx():
    return pytest.importorskip("onnx", reason="the onnx package (training extra) builds the test models")


def _lstm_weights(rng, inputs: int, units: int):
    scale = 1.0 / np.sqrt(units)
    w = rng.uniform(-scale, scale, (1, 4 * units, inputs)).astype(np.float32) * 3
    r = rng.uniform(-scale, scale, (1, 4 * units, units)).astype(np.float32) * 2
    b = rng.uniform(-0.3, 0.3, (1, 8 * units)).astype(np.float32)
    return w, r, b


def _graph(vocab: int, length: int | None, layers, embed, dense, encoding: str, step: bool, batch, metadata=None):
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs = [], [], [], []
    length = 1 if step else length
    if encoding == "index":
        inputs.append(helper.make_tensor_value_info("token" if step else "tokens", TensorProto.INT32, [batch, length]))
        inits.append(numpy_helper.from_array(embed, "embedding"))
        nodes.append(helper.make_node("Gather", ["embedding", inputs[0].name], ["embedded"], axis=0))
        current = "embedded"
    else:
        inputs.append(helper.make_tensor_value_info("token" if step else "tokens", TensorProto.FLOAT, [batch, length, 1]))
        current = inputs[0].name
    nodes.append(helper.make_node("Transpose", [current], ["seq0"], perm=[1, 0, 2]))
    current = "seq0"
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    for k, (w, r, b) in enumerate(layers):
        units = r.shape[2]
        for name, value in ((f"W{k}", w), (f"R{k}", r), (f"B{k}", b)):
            inits.append(numpy_helper.from_array(value, name))
        lstm_inputs = [current, f"W{k}", f"R{k}", f"B{k}"]
        if step:
            for state in ("h", "c"):
                inputs.append(helper.make_tensor_value_info(f"{state}{k}", TensorProto.FLOAT, [batch, units]))
                nodes.append(helper.make_node("Unsqueeze", [f"{state}{k}", "axis0"], [f"{state}{k}_init"]))
            lstm_inputs += ["", f"h{k}_init", f"c{k}_init"]
        nodes.append(helper.make_node("LSTM", lstm_inputs, [f"Y{k}", f"Yh{k}", f"Yc{k}"], hidden_size=units))
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"seq{k + 1}"]))
        current = f"seq{k + 1}"
        if step:
            for state, source in (("h", "Yh"), ("c", "Yc")):
                nodes.append(helper.make_node("Squeeze", [f"{source}{k}", "axis0"], [f"{state}{k}_out"]))
                outputs.append(helper.make_tensor_value_info(f"{state}{k}_out", TensorProto.FLOAT, [batch, units]))
    last = len(layers) - 1
    nodes.append(helper.make_node("Squeeze", [f"Yh{last}", "axis0"], ["last"]))
    inits.append(numpy_helper.from_array(dense[0], "dense_w"))
    inits.append(numpy_helper.from_array(dense[1], "dense_b"))
    nodes.append(helper.make_node("MatMul", ["last", "dense_w"], ["logits0"]))
    nodes.append(helper.make_node("Add", ["logits0", "dense_b"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    outputs.insert(0, helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, vocab]))
    graph = helper.make_graph(nodes, "step" if step else "window", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_model(
    folder: Path,
    vocabulary: Sequence[str] = VOCABULARY,
    *,
    name: str = "tiny",
    window: int = 32,
    units: Sequence[int] = (24, 16),
    encoding: str = "index",
    step: bool = True,
    seed: int = 0,
    batch: str | int = "N",
    training_tokens: Sequence[int] | None = None,
    output_size: int | None = None,
    free_length: bool = False,
) -> Path:
    """Write a tiny model into ``folder``; returns the JSON path. ``output_size`` fakes a vocab mismatch;
    ``free_length`` gives the window graph an input of any length (``[N, None]``)."""
    rng = np.random.default_rng(seed)
    vocab = len(vocabulary)
    out = output_size or vocab
    embed_dim = 8
    embed = rng.normal(0, 1, (vocab, embed_dim)).astype(np.float32)
    layers = []
    inputs = embed_dim if encoding == "index" else 1
    for size in units:
        layers.append(_lstm_weights(rng, inputs, size))
        inputs = size
    dense = (rng.normal(0, 1.5, (inputs, out)).astype(np.float32), rng.normal(0, 0.5, out).astype(np.float32))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # bind the graphs to the JSON as lofi-train export does (vocabulary digest and window in the metadata)
    from lofi_live.model.format import META_VOCABULARY, META_WINDOW, vocabulary_digest

    metadata = {META_VOCABULARY: vocabulary_digest(vocabulary), META_WINDOW: str(window)}
    length = None if free_length else window
    files = {"window": (f"{name}.onnx", _graph(out, length, layers, embed, dense, encoding, False, batch, metadata))}
    if step:
        files["step"] = (f"{name}.step.onnx", _graph(out, window, layers, embed, dense, encoding, True, batch, metadata))
    graphs = {}
    for kind, (file, data) in files.items():
        (folder / file).write_bytes(data)
        graphs[kind] = {"file": file, "sha256": hashlib.sha256(data).hexdigest(),
                        "input": "token" if kind == "step" else "tokens", "output": "probs"}
    if step:
        graphs["step"]["states"] = [[f"{s}{k}", size] for k, size in enumerate(units) for s in ("h", "c")]
    if training_tokens is None:
        training_tokens = rng.integers(0, vocab, 400).tolist()
    counts = Counter(training_tokens)
    pairs: dict[int, Counter] = {}
    for a, b in zip(training_tokens, training_tokens[1:]):
        pairs.setdefault(a, Counter())[b] += 1
    bigram = [min(pairs[i], key=lambda t: (-pairs[i][t], t)) if i in pairs else -1 for i in range(vocab)]
    seed_windows = [list(map(int, training_tokens[i : i + window])) for i in range(0, len(training_tokens) - window, 37)][:8]
    meta = {
        "format": 1,
        "name": name,
        "preset": "test",
        "window": window,
        "grid_beats": 0.5,
        "input_encoding": encoding,
        "vocabulary": list(vocabulary),
        "graphs": graphs,
        "seed_windows": seed_windows,
        "baselines": {"unigram_counts": [counts.get(i, 0) for i in range(vocab)], "bigram_next": bigram},
        "data": {"corpus": "synthetic", "files": 1, "tokens": len(training_tokens), "transpose": False},
        "metrics": {"epochs": 0},
        "training": {"command": "tests/model_fixtures.py"},
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


#: The grid tokenization's vocabulary for tests: the same notes and chords, with ``hold`` and ``rest``.
GRID_VOCABULARY = VOCABULARY + ["hold", "rest"]


def build_grid_token_model(folder: Path, *, name: str = "tiny-grid", seed: int = 0, **options) -> Path:
    """A tiny model of the grid tokenization (``tokens: grid`` in its JSON, hold and rest in its vocabulary).

    Same random network as :func:`build_model`; returns the JSON path.
    """
    path = build_model(folder, GRID_VOCABULARY, name=name, seed=seed, **options)
    meta = json.loads(path.read_text())
    meta["tokens"] = "grid"
    path.write_text(json.dumps(meta, indent=1))
    return path
