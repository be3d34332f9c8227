"""Import TensorFlow and Keras quietly: a user should see our messages, not TensorFlow's start-up log.

The environment must be set before TensorFlow is first imported, so every training module gets
Keras through :func:`quiet_keras` instead of importing it at the top. TensorFlow, tf2onnx, onnx,
music21 and matplotlib come with the ``[train]`` extra, not with the runtime: a command checks its
arguments first, then asks for the packages it needs (:func:`quiet_keras`, :func:`require`), so a
missing one is one line naming the extra, never a traceback.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from lofi_live.errors import LofiError

#: What to do when a training package is missing.
TRAIN_EXTRA = "install the [train] extra (pip install -e '.[train]')"


def _missing(error: ImportError) -> LofiError:
    name = (error.name or "").split(".")[0] or "a training package"
    return LofiError(f"{name} is not installed: {TRAIN_EXTRA}")


def require(*modules: str) -> None:
    """Import the ``[train]`` packages a command needs before it starts its work; a missing one is a LofiError."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise _missing(error) from None


def quiet_keras(seed: int | None = None) -> Any:
    """Silence TensorFlow's C++ and Python logging, import Keras, optionally seed every generator.

    oneDNN is turned off: besides its start-up notice, it makes float results depend on the
    machine, and the export's parity checks compare graphs to 1e-4.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        import tensorflow as tf  # first: absl and keras come with it, so a missing TensorFlow is named as such
        import absl.logging
        import keras
    except ImportError as error:
        raise _missing(error) from None

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return keras
