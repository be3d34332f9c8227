"""``bench``'s Keras measurement: the seed's approach, ``model.predict(window)`` per step, on the checkpoint an
export came from. The one place in ``lofi_live`` that imports TensorFlow, lazily, inside :func:`keras_window`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from lofi_live.commands.bench_figures import sample_windows, timing_stats
from lofi_live.errors import LofiError


def keras_checkpoint(model, given: str | None = None) -> Path | None:
    if given:
        if not Path(given).is_file():
            raise LofiError(f"{given}: no such Keras checkpoint")
        return Path(given)
    training = model.meta.get("training") or {}
    run, checkpoint = training.get("run"), training.get("checkpoint")
    if not run or not checkpoint:
        return None
    path = Path(run) / checkpoint
    return path if path.is_file() else None


def _rows(feeds, start: int, stop: int):
    """Rows ``start:stop`` of a Keras input: one array, or a dict of them (a model with positions)."""
    if isinstance(feeds, dict):
        return {name: value[start:stop] for name, value in feeds.items()}
    return feeds[start:stop]


def keras_window(model, calls: int, checkpoint: str | None = None) -> tuple[dict | None, str | None]:
    """The seed's per-step ``model.predict`` on the window, with the export's own Keras checkpoint.

    The loaded network is checked against the ONNX window graph on one window; a checkpoint whose
    predictions differ by more than 1e-4 is refused (it is not the exported model).
    """
    checkpoint = keras_checkpoint(model, checkpoint)
    if checkpoint is None:
        return None, f"{model.name}: Keras checkpoint not found (training.run/checkpoint in the JSON)"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import keras  # noqa: F401 - the single lazy TensorFlow import of lofi_live
        import tensorflow as tf
    except Exception:  # noqa: BLE001
        return None, "TensorFlow is not installed: the seed approach (Keras predict) is not measured"
    tf.get_logger().setLevel("ERROR")
    custom = {}
    if model.has_copy_gate:
        try:  # the pointer head is a layer of the training package (a source checkout has it)
            from training.pointer import pointer_layer_class

            custom["PointerSentinel"] = pointer_layer_class()
        except ImportError:
            return None, "the training package is not importable: the pointer model's Keras layer is missing"
    try:
        network = keras.models.load_model(checkpoint, compile=False, custom_objects=custom)
    except Exception as error:  # noqa: BLE001
        return None, f"{checkpoint}: cannot be loaded by Keras ({str(error).splitlines()[0][:100]})"
    windows = sample_windows(model, calls + 3)
    feeds = model.feed(windows)
    if model.uses_position:  # the positions window_probs assumes when given none: a bar from each window's start
        steps = np.tile(np.arange(windows.shape[1]) % 8, (len(windows), 1)).astype(np.int32)
        feeds = {"tokens": feeds, "positions": steps}
    check = network.predict(_rows(feeds, 0, 1), verbose=0)
    if check.ndim == 3:  # a sequence preset predicts at every position; the window graph keeps the last
        check = check[:, -1]
    difference = float(np.abs(check - model.window_probs(windows[:1], cache=False)).max())
    if difference > 1e-4:
        return None, f"{checkpoint}: its predictions differ from {model.name}.onnx by {difference:.2g}: not the exported weights"
    times = []
    for i in range(calls + 3):
        started = time.perf_counter()
        network.predict(_rows(feeds, i, i + 1), verbose=0)
        times.append(time.perf_counter() - started)
    stats = timing_stats(times[3:])
    model.meta.setdefault("_bench", {})["keras_max_abs_diff_vs_onnx"] = difference
    return stats, None
