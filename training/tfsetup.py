"""Import TensorFlow and Keras quietly: a user should see our messages, not TensorFlow's start-up log.

The environment must be set before TensorFlow is first imported, so every training module gets
Keras through :func:`quiet_keras` instead of importing it at the top.
"""

from __future__ import annotations

import os
from typing import Any


def quiet_keras(seed: int | None = None) -> Any:
    """Silence TensorFlow's C++ and Python logging, import Keras, optionally seed every generator.

    oneDNN is turned off: besides its start-up notice, it makes float results depend on the
    machine, and the export's parity checks compare graphs to 1e-4.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import absl.logging
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return keras
