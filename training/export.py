"""``lofi-train export``: a run's checkpoint -> ``NAME.onnx`` (+ ``NAME.step.onnx``) + ``NAME.json``.

Follows docs/MODEL_FORMAT.md, whose fields :mod:`lofi_live.model.format` builds and checks. Both graphs
are traced from the same Keras layers with ``tf2onnx.convert.from_function`` (``from_keras`` fails on
Keras 3):

* the window graph calls the model on ``tokens`` of any length from 1 to the window (a context shorter
  than the window is read as it is, from zero state: docs/MODEL_FORMAT.md, "Short contexts"); a
  sequence model's output is cut to its last position, so every preset's window graph gives
  ``probs [N, V]``;
* the step graph (plain Sequential LSTM stacks only) runs one token through the same layers, calling
  each LSTM layer's cell on the given ``h{k}``/``c{k}`` states, so the runtime decides in O(1) per step
  instead of re-reading the context.

Nothing is written until both checks pass on every context length from 1 to the window (the prefixes
of the run's seed windows): ONNX Runtime's window graph against Keras, and the step graph fed each
context token by token from zero states against the window graph.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lofi_live.model import format as model_format
from lofi_live.errors import LofiError
from lofi_live.model.loop_cache import LoopCache
from lofi_live.model.format import Graph, encode_inputs, state_names, state_output
from training.runs import best_checkpoint, checkpoint_epoch, load_model, load_run, read_history
from training.presets import last_position

PARITY_TOLERANCE = 1e-4
OPSET = 17


#: Layers a step graph can be rebuilt from (each applies to one time step on its own, or is an LSTM cell).
STEP_LAYERS = frozenset({"InputLayer", "Embedding", "LSTM", "Dense", "Dropout"})


def has_step_form(model: Any) -> bool:
    """Whether the model is a plain stack the step graph can follow (no layer reads the whole context)."""
    return type(model).__name__ == "Sequential" and all(type(layer).__name__ in STEP_LAYERS for layer in model.layers)


def lstm_units(model: Any) -> list[int]:
    """Units of every LSTM layer, from the input side: the step graph's state sizes."""
    return [layer.units for layer in model.layers if type(layer).__name__ == "LSTM"]


def step_function(model: Any) -> Callable[..., list[Any]]:
    """One token through the model's layers, each LSTM layer as its cell on explicit states.

    Embedding looks up one token, Dense applies to the step's features exactly as it applies to
    each step of a sequence, Dropout is the identity at inference.
    """

    def step(token: Any, *states: Any) -> list[Any]:
        x = token[:, 0]
        outputs: list[Any] = []
        k = 0
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "LSTM":
                x, (h, c) = layer.cell(x, [states[2 * k], states[2 * k + 1]], training=False)
                outputs += [h, c]
                k += 1
            elif kind in ("Embedding", "Dense"):
                x = layer(x)
            elif kind != "Dropout":
                raise LofiError(f"cannot export a step graph for a {kind} layer")
        return [x, *outputs]

    return step


def convert(function: Callable[..., Any], specs: Sequence[Any], output_names: Sequence[str]) -> bytes:
    """Trace a function to ONNX and give its outputs the contract's names (through Identity nodes)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    traced = tf.function(function, input_signature=list(specs))
    proto, _ = tf2onnx.convert.from_function(traced, input_signature=list(specs), opset=OPSET)
    for output, name in zip(proto.graph.output, output_names):
        if output.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name], name=f"rename_{name}"))
            output.name = name
    return proto.SerializeToString()


def bind_graph(graph: bytes, vocabulary: Sequence[str], window: int) -> bytes:
    """Record the vocabulary digest and window in the graph's metadata (docs/MODEL_FORMAT.md).

    The JSON records each graph's SHA-256 and the graph records the JSON's vocabulary and window, so
    the runtime refuses a JSON edited or paired with another model's graphs. Metadata does not change
    what the graph computes.
    """
    import onnx

    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, {model_format.META_VOCABULARY: model_format.vocabulary_digest(vocabulary),
                                        model_format.META_WINDOW: str(window)})
    return proto.SerializeToString()


def session(graph: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


def run_steps(step: Any, inputs: np.ndarray, units: Sequence[int]) -> np.ndarray:
    """Feed ``[N, T, ...]`` inputs to the step graph one token at a time from zero states.

    Returns the probabilities after every token, ``[N, T, V]``: entry ``t`` is the step graph's answer
    to the context of the first ``t + 1`` tokens.
    """
    states = {name: np.zeros((inputs.shape[0], size), np.float32) for name, size in state_names(units)}
    names = [model_format.OUTPUT] + [state_output(name) for name in states]
    probs = []
    for t in range(inputs.shape[1]):
        results = step.run(names, {model_format.STEP_INPUT: np.ascontiguousarray(inputs[:, t:t + 1]), **states})
        probs.append(results[0])
        states = dict(zip(states, results[1:]))
    return np.stack(probs, axis=1)


def window_parity(model: Any, window_graph: Any, inputs: np.ndarray) -> tuple[np.ndarray, float]:
    """The window graph on every context length 1..T of ``inputs`` ``[N, T, ...]``: (its probabilities
    ``[N, T, V]``, entry ``t`` for the first ``t + 1`` tokens; the largest difference from Keras)."""
    found, worst = [], 0.0
    for length in range(1, inputs.shape[1] + 1):
        context = inputs[:, :length]
        probs = window_graph.run([model_format.OUTPUT], {model_format.WINDOW_INPUT: context})[0]
        expected = np.asarray(last_position(model, model(context, training=False)))
        worst = max(worst, float(np.abs(probs - expected).max()))
        found.append(probs)
    return np.stack(found, axis=1), worst


def output_stem(path: Path) -> Path:
    """``exported_models/x``, ``x.json`` or ``x.onnx`` -> ``exported_models/x``."""
    return path.with_suffix("") if path.suffix in (".json", ".onnx") else path


def metrics_for(history: Sequence[dict[str, float]], epoch: int | None) -> dict[str, float]:
    """The history row of the checkpoint's epoch (both count from 1), or the last row."""
    last = history[-1] if history else {}
    row = next((r for r in history if epoch is not None and int(r["epoch"]) == epoch), last)
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    metrics["epochs"] = epoch if epoch is not None else len(history)
    return metrics


def export(
    run_dir: Path, checkpoint: Path | None, target: Path, loop_cache: LoopCache = LoopCache(),
    test_files: Sequence[str] = (),
) -> dict[str, Any]:
    """Export, check and write the model; returns the JSON description written.

    The run and the checkpoint are checked before TensorFlow is imported, so a bad argument is named
    even where the ``[train]`` extra is missing. ``loop_cache`` is recorded in the JSON and mixed in by
    the runtime (lofi_live.model.loop_cache).
    """
    from training.tfsetup import quiet_keras, require

    run = load_run(run_dir)
    if test_files:  # the files the model's figures are reported on, never trained or selected on
        run["data"] = {**run["data"], "test_files": list(test_files)}
    source = checkpoint or best_checkpoint(run_dir)
    if not source.is_file():
        raise LofiError(f"{source}: no such checkpoint file")
    windows = np.asarray(run.get("seed_windows") or [], dtype=np.int64)
    if windows.size == 0:
        raise LofiError(f"{run_dir / 'run.json'}: holds no seed_windows to check the export on")
    keras = quiet_keras()
    require("tf2onnx", "onnx")
    import tensorflow as tf
    import tf2onnx

    model = load_model(source)
    vocabulary, window, encoding = run["vocabulary"], int(run["window"]), run["input_encoding"]
    vocab = len(vocabulary)
    if model.output_shape[-1] != vocab:
        raise LofiError(f"{source}: model has {model.output_shape[-1]} outputs "
                        f"but the run's vocabulary has {vocab} tokens")
    units = lstm_units(model)
    if run["preset"] == "lstm-pointer":
        return _export_pointer(run, run_dir, source, target, model, windows, loop_cache)
    dtype = tf.int32 if encoding == "index" else tf.float32
    tail = [] if encoding == "index" else [1]
    # any context length up to the window: a short context is read as it is (docs/MODEL_FORMAT.md)
    window_graph = convert(
        lambda tokens: [last_position(model, model(tokens, training=False))],
        [tf.TensorSpec([None, None, *tail], dtype, name=model_format.WINDOW_INPUT)], [model_format.OUTPUT])
    step_graph = None
    if has_step_form(model):
        states = state_names(units)
        step_graph = convert(
            step_function(model),
            [tf.TensorSpec([None, 1, *tail], dtype, name=model_format.STEP_INPUT),
             *(tf.TensorSpec([None, size], tf.float32, name=name) for name, size in states)],
            [model_format.OUTPUT] + [state_output(name) for name, _ in states])

    inputs = encode_inputs(windows, encoding, vocab)
    window_probs, parity = window_parity(model, session(window_graph), inputs)
    step_parity = 0.0
    if step_graph is not None:
        step_parity = float(np.abs(run_steps(session(step_graph), inputs, units) - window_probs).max())
    print(f"parity over contexts of 1..{window} tokens ({len(windows)} seed windows): ONNX window graph vs "
          f"Keras max abs diff {parity:.3g}; "
          + (f"step graph (each context from zero state) vs window graph {step_parity:.3g}"
             if step_graph is not None else "no step graph (the model reads its whole context)"))
    if parity > PARITY_TOLERANCE or step_parity > PARITY_TOLERANCE:
        raise LofiError(f"{source}: export parity check failed (window {parity:.3g}, step {step_parity:.3g}, "
                        f"tolerance {PARITY_TOLERANCE:g}); nothing written")

    return _write_export(run, run_dir, source, target, window_graph, step_graph, units, parity, step_parity,
                         loop_cache)


def _export_pointer(run: dict[str, Any], run_dir: Path, source: Path, target: Path, model: Any,
                    windows: np.ndarray, loop_cache: LoopCache) -> dict[str, Any]:
    """The ``lstm-pointer`` preset's graphs (:mod:`training.export_pointer`), checked, then written."""
    from training import export_pointer

    window = int(run["window"])
    window_graph, step_graph, parity, step_parity, pointer = export_pointer.graphs(
        model, len(run["vocabulary"]), window, windows, convert, session)
    print(f"parity over contexts of {', '.join(map(str, export_pointer.parity_lengths(window)))} tokens "
          f"({min(8, len(windows))} seed windows): ONNX window graph vs Keras max abs diff {parity:.3g}; step graph "
          f"(each context from zero state and an empty cache) vs window graph {step_parity:.3g}")
    if parity > PARITY_TOLERANCE or step_parity > PARITY_TOLERANCE:
        raise LofiError(f"{source}: export parity check failed (window {parity:.3g}, step {step_parity:.3g}, "
                        f"tolerance {PARITY_TOLERANCE:g}); nothing written")
    return _write_export(run, run_dir, source, target, window_graph, step_graph, [pointer["units"]], parity,
                         step_parity, loop_cache, pointer)


def _write_export(run: dict[str, Any], run_dir: Path, source: Path, target: Path, window_graph: bytes,
                  step_graph: bytes | None, units: Sequence[int], parity: float, step_parity: float,
                  loop_cache: LoopCache, pointer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bind, describe, self-check and write the graphs and the JSON of an export whose parity passed."""
    import tensorflow as tf
    import tf2onnx
    from training.tfsetup import quiet_keras

    keras = quiet_keras()
    vocabulary, window, encoding = run["vocabulary"], int(run["window"]), run["input_encoding"]
    windows = np.asarray(run.get("seed_windows") or [], dtype=np.int64)
    stem = output_stem(target)
    name = stem.name
    window_graph = bind_graph(window_graph, vocabulary, window)
    files = {".onnx": window_graph}
    step_entry = None
    if step_graph is not None:
        step_graph = bind_graph(step_graph, vocabulary, window)
        files[".step.onnx"] = step_graph
        step_entry = Graph.of(f"{name}.step.onnx", step_graph, units)
    metrics = metrics_for(read_history(run_dir), checkpoint_epoch(source))
    metrics.update(parity_max_abs_diff=parity, step_parity_max_abs_diff=step_parity)
    description = model_format.describe(
        name=name, preset=run["preset"], window=window, tokens=run.get("tokens", "seed"), encoding=encoding,
        vocabulary=vocabulary, window_graph=Graph.of(f"{name}.onnx", window_graph), step_graph=step_entry,
        seed_windows=windows.tolist(), loop_cache=loop_cache, baselines=run["baselines"], data=run["data"],
        metrics=metrics,
        training={
            "command": run["command"],
            "checkpoint": source.name,
            "run": str(run_dir.resolve()),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "opset": OPSET,
        },
        pointer=pointer,
    )
    # the runtime's own check of the fields, before anything is written
    model_format.check(description, Path(f"{stem}.json"))
    stale = Path(f"{stem}.step.onnx")
    if step_graph is None and stale.exists():
        stale.unlink()  # a step graph of an earlier export under this name no longer belongs to the JSON
    _write_files(stem, {**files, ".json": json.dumps(description, indent=1).encode()})
    return description


def _write_files(stem: Path, contents: dict[str, bytes]) -> None:
    """Write each file under a temporary name, then rename them all (JSON last, so it never points at nothing)."""
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        for suffix, data in contents.items():
            Path(f"{stem}{suffix}.tmp").write_bytes(data)
        for suffix in contents:
            os.replace(f"{stem}{suffix}.tmp", f"{stem}{suffix}")
    except OSError as error:
        raise LofiError(f"{stem}: cannot write the exported model ({error.strerror or error})") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder made by lofi-train fit")
    parser.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="checkpoint to export (default: the run's best, its last improvement)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="exported_models/NAME",
                        help="writes NAME.onnx, NAME.json and, for a plain LSTM stack, NAME.step.onnx")
    parser.add_argument("--test-files", action="append", metavar="GLOB",
                        help="record in the JSON (data.test_files) the files, or globs, the model's figures are "
                        "reported on and that were never trained or selected on (repeatable)")
    parser.add_argument("--loop-cache", type=float, default=0.0, metavar="WEIGHT",
                        help="mix this share of the loop cache into the network's predictions at run time "
                        "(0 = network alone, the default; see lofi_live/model/loop_cache.py)")
    parser.add_argument("--loop-decay", type=float, default=0.9, metavar="DECAY",
                        help="per-token decay of the loop cache's votes (default 0.9)")


def run(args: argparse.Namespace) -> int:
    if not (0.0 <= args.loop_cache < 1.0 and 0.0 < args.loop_decay <= 1.0):
        raise LofiError(f"--loop-cache {args.loop_cache} must be in [0, 1) and --loop-decay {args.loop_decay} in (0, 1]")
    description = export(args.run_dir, args.checkpoint, args.output, LoopCache(args.loop_cache, args.loop_decay),
                         args.test_files or ())
    stem = output_stem(args.output)
    graphs = " and ".join(g["file"] for g in description["graphs"].values())
    print(f"{stem}.json: {description['preset']} model on {description['tokens']} tokens, "
          f"vocabulary {len(description['vocabulary'])}, window {description['window']}, graphs {graphs}")
    return 0
