"""``lofi-train export``: a run's checkpoint -> ``NAME.onnx`` + ``NAME.step.onnx`` + ``NAME.json``.

Follows docs/MODEL_FORMAT.md. Both graphs are traced from the same Keras layers with
``tf2onnx.convert.from_function`` (``from_keras`` fails on Keras 3):

* the window graph calls the model on ``tokens`` (a ``*-seq`` model's output is cut to its last
  position, so every preset's window graph gives ``probs [N, V]``);
* the step graph runs one token through the same layers, calling each LSTM layer's cell on the
  given ``h{k}``/``c{k}`` states, so the runtime decides in O(1) per step instead of re-reading the
  window.

Nothing is written until both checks pass: ONNX Runtime against Keras on real training windows,
and the step graph fed each window token by token from zero states against the window graph.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.loop_cache import LoopCache
from lofi_live.tokens import GRID_BEATS
from training.fit import best_checkpoint, checkpoint_epoch, load_model, load_run, read_history
from training.presets import last_position

PARITY_TOLERANCE = 1e-4
OPSET = 17


def encode_inputs(indices: np.ndarray, encoding: str, vocab: int) -> np.ndarray:
    """Token indices ``[N, T]`` -> the graph's input: int32 as is, or float ``i / V`` with a trailing axis."""
    if encoding == "index":
        return indices.astype(np.int32)
    return (indices.astype(np.float32) / np.float32(vocab))[..., None]


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

    from lofi_live.model import META_VOCABULARY, META_WINDOW, vocabulary_digest

    proto = onnx.load_from_string(graph)
    onnx.helper.set_model_props(proto, {META_VOCABULARY: vocabulary_digest(vocabulary), META_WINDOW: str(window)})
    return proto.SerializeToString()


def session(graph: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"])


def run_steps(step: Any, inputs: np.ndarray, units: Sequence[int]) -> np.ndarray:
    """Feed ``[N, T, ...]`` inputs to the step graph one token at a time from zero states; last probs."""
    count = inputs.shape[0]
    states = {}
    for k, size in enumerate(units):
        states[f"h{k}"] = np.zeros((count, size), np.float32)
        states[f"c{k}"] = np.zeros((count, size), np.float32)
    names = ["probs"] + [f"{s}{k}_out" for k in range(len(units)) for s in ("h", "c")]
    probs = None
    for t in range(inputs.shape[1]):
        results = step.run(names, {"token": inputs[:, t:t + 1], **states})
        probs = results[0]
        for k in range(len(units)):
            states[f"h{k}"], states[f"c{k}"] = results[1 + 2 * k], results[2 + 2 * k]
    return probs


def output_stem(path: Path) -> Path:
    """``exported_models/x``, ``x.json`` or ``x.onnx`` -> ``exported_models/x``."""
    return path.with_suffix("") if path.suffix in (".json", ".onnx") else path


def metrics_for(history: Sequence[dict[str, float]], epoch: int | None) -> dict[str, float]:
    """The history row of the checkpoint's epoch (1-based), or the last row."""
    last = history[-1] if history else {}
    row = next((r for r in history if epoch is not None and int(r["epoch"]) + 1 == epoch), last)
    metrics = {k: v for k, v in row.items() if k != "epoch"}
    metrics["epochs"] = epoch if epoch is not None else len(history)
    return metrics


def export(
    run_dir: Path, checkpoint: Path | None, target: Path, loop_cache: LoopCache = LoopCache()
) -> dict[str, Any]:
    """Export, check and write the model; returns the JSON description written.

    ``loop_cache`` is recorded in the JSON and mixed in by the runtime (lofi_live.loop_cache).
    """
    from training.tfsetup import quiet_keras

    run = load_run(run_dir)
    source = checkpoint or best_checkpoint(run_dir)
    keras = quiet_keras()
    import tensorflow as tf
    import tf2onnx

    model = load_model(source)
    vocabulary, window, encoding = run["vocabulary"], int(run["window"]), run["input_encoding"]
    vocab = len(vocabulary)
    if model.output_shape[-1] != vocab:
        raise LofiError(f"{source}: model has {model.output_shape[-1]} outputs "
                        f"but the run's vocabulary has {vocab} tokens")
    units = lstm_units(model)
    dtype = tf.int32 if encoding == "index" else tf.float32
    tail = [] if encoding == "index" else [1]
    window_graph = convert(
        lambda tokens: [last_position(model, model(tokens, training=False))],
        [tf.TensorSpec([None, window, *tail], dtype, name="tokens")], ["probs"])
    state_specs = [tf.TensorSpec([None, n], tf.float32, name=f"{s}{k}")
                   for k, n in enumerate(units) for s in ("h", "c")]
    step_graph = convert(
        step_function(model),
        [tf.TensorSpec([None, 1, *tail], dtype, name="token"), *state_specs],
        ["probs"] + [f"{s}{k}_out" for k in range(len(units)) for s in ("h", "c")])

    windows = np.asarray(run.get("seed_windows") or [], dtype=np.int64)
    if windows.size == 0:
        raise LofiError(f"{run_dir / 'run.json'}: holds no seed_windows to check the export on")
    inputs = encode_inputs(windows, encoding, vocab)
    expected = np.asarray(last_position(model, model(inputs, training=False)))
    window_probs = session(window_graph).run(["probs"], {"tokens": inputs})[0]
    parity = float(np.abs(window_probs - expected).max())
    step_probs = run_steps(session(step_graph), inputs, units)
    step_parity = float(np.abs(step_probs - window_probs).max())
    print(f"parity: ONNX window graph vs Keras max abs diff {parity:.3g}; "
          f"step graph ({window} tokens from zero state) vs window graph {step_parity:.3g} ({len(windows)} windows)")
    if parity > PARITY_TOLERANCE or step_parity > PARITY_TOLERANCE:
        raise LofiError(f"{source}: export parity check failed (window {parity:.3g}, step {step_parity:.3g}, "
                        f"tolerance {PARITY_TOLERANCE:g}); nothing written")

    window_graph = bind_graph(window_graph, vocabulary, window)
    step_graph = bind_graph(step_graph, vocabulary, window)
    stem = output_stem(target)
    name = stem.name
    metrics = metrics_for(read_history(run_dir), checkpoint_epoch(source))
    metrics.update(parity_max_abs_diff=parity, step_parity_max_abs_diff=step_parity)
    description = {
        "format": 1,
        "name": name,
        "preset": run["preset"],
        "window": window,
        "grid_beats": GRID_BEATS,
        "input_encoding": encoding,
        "vocabulary": vocabulary,
        "graphs": {
            "window": {"file": f"{name}.onnx", "sha256": hashlib.sha256(window_graph).hexdigest(),
                       "input": "tokens", "output": "probs"},
            "step": {"file": f"{name}.step.onnx", "sha256": hashlib.sha256(step_graph).hexdigest(),
                     "input": "token", "output": "probs",
                     "states": [[f"{s}{k}", n] for k, n in enumerate(units) for s in ("h", "c")]},
        },
        "seed_windows": windows.tolist(),
        "loop_cache": {"weight": loop_cache.weight, "decay": loop_cache.decay},
        "baselines": run["baselines"],
        "data": run["data"],
        "metrics": metrics,
        "training": {
            "command": run["command"],
            "checkpoint": source.name,
            "run": str(run_dir.resolve()),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "opset": OPSET,
        },
    }
    _write_files(stem, {".onnx": window_graph, ".step.onnx": step_graph,
                        ".json": json.dumps(description, indent=1).encode()})
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
                        help="writes NAME.onnx, NAME.step.onnx and NAME.json")
    parser.add_argument("--loop-cache", type=float, default=0.0, metavar="WEIGHT",
                        help="mix this share of the loop cache into the network's predictions at run time "
                        "(0 = network alone, the default; see lofi_live/loop_cache.py)")
    parser.add_argument("--loop-decay", type=float, default=0.9, metavar="DECAY",
                        help="per-token decay of the loop cache's votes (default 0.9)")


def run(args: argparse.Namespace) -> int:
    if not (0.0 <= args.loop_cache < 1.0 and 0.0 < args.loop_decay <= 1.0):
        raise LofiError(f"--loop-cache {args.loop_cache} must be in [0, 1) and --loop-decay {args.loop_decay} in (0, 1]")
    description = export(args.run_dir, args.checkpoint, args.output, LoopCache(args.loop_cache, args.loop_decay))
    stem = output_stem(args.output)
    print(f"{stem}.json: {description['preset']} model, vocabulary {len(description['vocabulary'])}, "
          f"window {description['window']}, graphs {stem.name}.onnx and {stem.name}.step.onnx")
    return 0
