"""The Keras models: ``seed`` (the seed article's network, as it was) and smaller, faster presets.

Every preset is a Sequential stack of Embedding / LSTM / Dense / Dropout layers only, so the export
can rebuild a one-step graph from the same layers (an LSTM's cell, a Dense applied per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: name -> (input encoding, batch size, one-line description)
PRESETS: dict[str, tuple[str, int, str]] = {
    "seed": ("scaled", 64, "the seed article: 3 x LSTM 512 with Dense 256 between, index/vocab input, rmsprop"),
    "small": ("index", 64, "Embedding 64 -> LSTM 256 -> Dropout 0.2 -> softmax, adam; trains in minutes on 2 cores"),
    "medium": ("index", 64, "Embedding 96 -> 2 x LSTM 256 with Dropout 0.2 -> softmax, adam"),
}


@dataclass(frozen=True)
class Preset:
    name: str
    input_encoding: str
    batch_size: int
    build: Callable[[int, int], Any]


def _seed(vocab: int, window: int) -> Any:
    """LSTM 512 (sequences) -> Dense 256 -> Dense 256 -> LSTM 512 (sequences) -> Dense 256 -> LSTM 512 -> softmax."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(window, 1), dtype="float32"),
        layers.LSTM(512, return_sequences=True),
        layers.Dense(256),
        layers.Dense(256),
        layers.LSTM(512, return_sequences=True),
        layers.Dense(256),
        layers.LSTM(512),
        layers.Dense(vocab, activation="softmax"),
    ], name="seed")
    compile_model(model, "seed")
    return model


def _small(vocab: int, window: int) -> Any:
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(window,), dtype="int32"),
        layers.Embedding(vocab, 64),
        layers.LSTM(256),
        layers.Dropout(0.2),
        layers.Dense(vocab, activation="softmax"),
    ], name="small")
    compile_model(model, "adam")
    return model


def _medium(vocab: int, window: int) -> Any:
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(window,), dtype="int32"),
        layers.Embedding(vocab, 96),
        layers.LSTM(256, return_sequences=True),
        layers.Dropout(0.2),
        layers.LSTM(256),
        layers.Dropout(0.2),
        layers.Dense(vocab, activation="softmax"),
    ], name="medium")
    compile_model(model, "adam")
    return model


_BUILDERS = {"seed": _seed, "small": _small, "medium": _medium}


def get_preset(name: str) -> Preset:
    encoding, batch_size, _ = PRESETS[name]
    return Preset(name, encoding, batch_size, _BUILDERS[name])


def compile_model(model: Any, optimizer: str) -> None:
    """Compile with a fresh optimizer: ``"seed"`` is the article's rmsprop, ``"adam"`` Adam at 2e-3.

    Sparse categorical cross-entropy on integer targets equals the seed's categorical
    cross-entropy on one-hot targets, without the one-hot matrix.
    """
    import keras

    fresh = keras.optimizers.RMSprop() if optimizer == "seed" else keras.optimizers.Adam(2e-3)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=fresh, metrics=["accuracy"])
