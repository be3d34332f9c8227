"""The Keras models: ``seed`` (the seed article's network, as it was) and smaller, faster presets.

The Sequential presets are stacks of Embedding / LSTM / Dense / Dropout layers only, so the export
can rebuild a one-step graph from the same layers (an LSTM's cell, a Dense applied per step).
``lstm-attention`` adds a causal self-attention layer that reads the whole context, so it is
exported with a window graph only (the runtime runs it on the context every step).

The ``*-seq`` presets ("sequence" presets) predict the next token at every position of the window
while training: their last LSTM returns sequences, the Dense softmax applies per time step, the
model outputs ``[N, window, V]`` and the targets are ``ids[s+1 : s+window+1]``. One window thus
gives ``window`` targets instead of one, which is what lets a model learn to copy a repeating loop
from its context quickly. Their metrics ``last_loss`` / ``last_accuracy`` score the last position
only, the one the live engine uses; the export keeps only that position (see :func:`last_position`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: name -> (input encoding, batch size, one-line description)
PRESETS: dict[str, tuple[str, int, str]] = {
    "seed": ("scaled", 64, "the seed article: 3 x LSTM 512 with Dense 256 between, index/vocab input, rmsprop"),
    "small": ("index", 64, "Embedding 64 -> LSTM 256 -> Dropout 0.2 -> softmax, adam; trains in minutes on 2 cores"),
    "medium": ("index", 64, "Embedding 96 -> 2 x LSTM 256 with Dropout 0.2 -> softmax, adam"),
    "small-seq": ("index", 64, "as small, trained on the next token at every window position"),
    "medium-seq": ("index", 64, "as medium, trained on the next token at every window position"),
    "lstm-attention": ("index", 64, "Embedding 96 -> LSTM 256 -> causal self-attention over the LSTM's outputs "
                       "-> Dense 256 -> softmax at every position; copies loops from its context"),
    "lstm-pointer": ("index", 32, "token + bar-position embeddings -> LSTM 192 -> pointer-sentinel head (attention "
                     "over the window proposes what followed each earlier step, a learned gate mixes it with the "
                     "vocabulary softmax); exact step graph"),
}

#: presets whose model outputs ``[N, window, V]`` (a prediction per position)
SEQUENCE_PRESETS = frozenset({"small-seq", "medium-seq", "lstm-attention", "lstm-pointer"})
#: presets that read each step's position in the 4/4 bar beside its token (inputs ``tokens`` and ``positions``)
POSITION_PRESETS = frozenset({"lstm-pointer"})


@dataclass(frozen=True)
class Preset:
    name: str
    input_encoding: str
    batch_size: int
    build: Callable[[int, int], Any]

    @property
    def sequence(self) -> bool:
        """Whether the model predicts at every window position (targets ``[N, window]``)."""
        return self.name in SEQUENCE_PRESETS

    @property
    def position(self) -> bool:
        """Whether the model reads bar positions beside the tokens (a dict input ``tokens`` / ``positions``)."""
        return self.name in POSITION_PRESETS


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


def _embedding_lstm(name: str, embedding: int, lstms: int, sequence: bool) -> Callable[[int, int], Any]:
    """Embedding -> ``lstms`` x (LSTM 256 -> Dropout 0.2) -> softmax, Adam.

    The last LSTM returns sequences only for a ``sequence`` preset, so ``small`` and ``small-seq``
    (or ``medium`` and ``medium-seq``) hold the same weights and can fine-tune each other.
    """

    def build(vocab: int, window: int) -> Any:
        import keras
        from keras import layers

        stack: list[Any] = [keras.Input(shape=(window,), dtype="int32"), layers.Embedding(vocab, embedding)]
        for index in range(lstms):
            stack += [layers.LSTM(256, return_sequences=sequence or index < lstms - 1), layers.Dropout(0.2)]
        stack.append(layers.Dense(vocab, activation="softmax"))
        model = keras.Sequential(stack, name=name)
        compile_model(model, "adam", sequence=sequence)
        return model

    return build


def _lstm_attention(vocab: int, window: int) -> Any:
    """An LSTM whose outputs a causal self-attention layer reads back, predicting at every position.

    LoFi is loop music: what comes next is most often what followed the same chord a bar ago. An
    LSTM alone learns the training loops by heart rather than that act of copying (the network
    alone scored like a bigram on held-out loops). One attention layer over the LSTM's outputs can
    do it: the last position's query (the token just played) finds the position whose LSTM state
    says "the token before me was this one" and reads what that position holds. The causal mask
    keeps every position's prediction to its own past, so the model is trained on, and answers
    for, every context length from 1 to the window (the input length is free in the exported graph).
    """
    import keras
    from keras import layers

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = layers.Embedding(vocab, 96)(tokens)
    states = layers.LSTM(256, return_sequences=True)(x)
    states = layers.Dropout(0.1)(states)
    recalled = layers.MultiHeadAttention(num_heads=4, key_dim=32, dropout=0.0)(states, states, use_causal_mask=True)
    mixed = layers.Concatenate()([states, recalled])
    mixed = layers.Dense(256, activation="relu")(mixed)
    mixed = layers.Dropout(0.2)(mixed)
    probs = layers.Dense(vocab, activation="softmax")(mixed)
    model = keras.Model(tokens, probs, name="lstm_attention")
    compile_model(model, "adam", sequence=True)
    return model


def _lstm_pointer(vocab: int, window: int) -> Any:
    """:func:`training.pointer.build_pointer`, compiled as a sequence preset."""
    from training.pointer import build_pointer

    model = build_pointer(vocab, window)
    compile_model(model, "adam", sequence=True)
    return model


_BUILDERS = {
    "seed": _seed,
    "small": _embedding_lstm("small", 64, 1, sequence=False),
    "medium": _embedding_lstm("medium", 96, 2, sequence=False),
    "small-seq": _embedding_lstm("small_seq", 64, 1, sequence=True),
    "medium-seq": _embedding_lstm("medium_seq", 96, 2, sequence=True),
    "lstm-attention": _lstm_attention,
    "lstm-pointer": _lstm_pointer,
}


def get_preset(name: str) -> Preset:
    encoding, batch_size, _ = PRESETS[name]
    return Preset(name, encoding, batch_size, _BUILDERS[name])


def compile_model(model: Any, optimizer: str, sequence: bool = False, learning_rate: float | None = None) -> None:
    """Compile with a fresh optimizer: ``"seed"`` is the article's rmsprop, ``"adam"`` Adam at 2e-3.

    ``learning_rate`` overrides the optimizer's default (a fine-tune on a few loops wants a smaller
    step than pre-training, or it overwrites what pre-training learnt within an epoch).

    Sparse categorical cross-entropy on integer targets equals the seed's categorical
    cross-entropy on one-hot targets, without the one-hot matrix. A ``sequence`` model's loss and
    ``accuracy`` average over all window positions; ``last_loss`` and ``last_accuracy`` score the
    last position alone (the same quantities as a last-position preset's ``loss`` and ``accuracy``).
    """
    import keras

    if optimizer == "seed":
        fresh = keras.optimizers.RMSprop(**({"learning_rate": learning_rate} if learning_rate else {}))
    else:
        fresh = keras.optimizers.Adam(learning_rate or 2e-3)
    metrics: list[Any] = ["accuracy"]
    if sequence:
        metrics += [last_loss, last_accuracy]
    model.compile(loss="sparse_categorical_crossentropy", optimizer=fresh, metrics=metrics)


def last_loss(y_true: Any, y_pred: Any) -> Any:
    """Cross-entropy of the last window position only (targets ``[N, W]``, probabilities ``[N, W, V]``)."""
    import keras

    return keras.losses.sparse_categorical_crossentropy(y_true[:, -1], y_pred[:, -1, :])


def last_accuracy(y_true: Any, y_pred: Any) -> Any:
    """Top-1 accuracy of the last window position only."""
    import keras

    return keras.metrics.sparse_categorical_accuracy(y_true[:, -1], y_pred[:, -1, :])


def custom_objects() -> dict[str, Any]:
    """What ``keras.models.load_model(..., compile=True)`` needs: a sequence preset's metrics, the pointer layer."""
    from training.pointer import pointer_layer_class

    return {"last_loss": last_loss, "last_accuracy": last_accuracy, "PointerSentinel": pointer_layer_class()}


def is_sequence_model(model: Any) -> bool:
    """Whether a Keras model outputs a prediction per position (``[N, W, V]``) rather than ``[N, V]``."""
    return len(model.output_shape) == 3


def last_position(model: Any, probs: Any) -> Any:
    """The model's output for the last window position: ``[N, V]`` whatever the preset."""
    return probs[:, -1, :] if is_sequence_model(model) else probs
