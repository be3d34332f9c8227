"""The ``lstm-pointer`` network: an LSTM that knows the bar line and can copy from its window.

LoFi is loop music: what comes next is most often what followed the same moment one loop ago. A
softmax over the vocabulary has to learn that act of copying in its weights, and on loops by a creator
it never saw it does not (an LSTM alone scores like a bigram there). A pointer-sentinel head
(Merity et al., 2016) gives the network the act itself:

* every step reads its token and its position in the 4/4 bar (0-7, from the beat grid), so "the same
  moment" includes "the same place in the bar";
* the LSTM's output at step ``t`` makes a *query*; its outputs at the earlier steps ``j < t`` make *keys*;
* attention of the query over the keys, with one learned *sentinel* score beside them, gives weights
  ``a_j`` and ``a_sentinel`` summing to 1;
* each earlier step ``j`` proposes the token that followed it, ``tokens[j + 1]``: the copy distribution
  is the scatter-add of ``a_j`` onto those tokens;
* the sentinel's weight is the gate ``g``: the prediction is ``g * softmax(W h_t) + sum_j a_j onehot(tokens[j+1])``.

Trained end to end on the next token at every window position, the network learns when to copy (a loop
played again), from where (the key says which earlier moment matches), and when to play freely. The
head's parts (vocabulary softmax, normalized copy distribution, gate) are exported separately so the
runtime can move the gate with ``--variation`` (docs/MODEL_FORMAT.md).
"""

from __future__ import annotations

from typing import Any

#: Embedding widths and LSTM size of the preset.
TOKEN_EMBEDDING = 96
POSITION_EMBEDDING = 16
UNITS = 192
KEY_DIM = 64
#: Positions in the bar (grid steps of 0.5 beat in 4/4).
BAR_POSITIONS = 8


def pointer_layer_class() -> Any:
    """The Keras layer of the pointer-sentinel head (built lazily: Keras is imported only when training)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="lofi_live")
    class PointerSentinel(keras.layers.Layer):
        """Mixes a vocabulary softmax with a copy distribution over the window; see the module docstring."""

        def __init__(self, vocab: int, key_dim: int = KEY_DIM, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.vocab, self.key_dim = vocab, key_dim
            self.logits = keras.layers.Dense(vocab, name="vocab_logits")
            self.query = keras.layers.Dense(key_dim, name="query")
            self.key = keras.layers.Dense(key_dim, name="key")

        def build(self, input_shape: Any) -> None:
            states_shape = input_shape[0]
            self.logits.build(states_shape)
            self.query.build(states_shape)
            self.key.build(states_shape)
            self.sentinel = self.add_weight(name="sentinel", shape=(self.key_dim,), initializer="zeros")
            super().build(input_shape)

        def parts(self, states: Any, tokens: Any) -> tuple[Any, Any, Any]:
            """(vocabulary softmax ``[N, T, V]``, copy mass ``[N, T, V]`` (sums to ``1 - gate``), gate ``[N, T]``)."""
            length = tf.shape(tokens)[1]
            queries = self.query(states)
            keys = self.key(states)
            scale = 1.0 / float(self.key_dim) ** 0.5
            scores = tf.einsum("ntd,njd->ntj", queries, keys) * scale
            # step t may point at the steps j < t: their next token, tokens[j + 1], is known at t
            earlier = tf.linalg.band_part(tf.ones((length, length)), -1, 0) - tf.eye(length)
            scores = scores + (1.0 - earlier)[None] * -1e9
            sentinel = tf.einsum("ntd,d->nt", queries, self.sentinel)[..., None] * scale
            weights = tf.nn.softmax(tf.concat([scores, sentinel], axis=-1), axis=-1)
            gate = weights[..., -1]
            following = tf.concat([tokens[:, 1:], tokens[:, -1:]], axis=1)  # the last one is never pointed at
            copy = tf.einsum("ntj,njv->ntv", weights[..., :-1], tf.one_hot(following, self.vocab))
            return tf.nn.softmax(self.logits(states), axis=-1), copy, gate

        def call(self, inputs: Any) -> Any:
            states, tokens = inputs
            vocab_probs, copy, gate = self.parts(states, tokens)
            return gate[..., None] * vocab_probs + copy

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "vocab": self.vocab, "key_dim": self.key_dim}

    return PointerSentinel


def build_pointer(vocab: int, window: int) -> Any:
    """Token + bar-position embeddings -> LSTM 192 -> pointer-sentinel head, next token at every position.

    The input length is free (``None``), as the attention preset's: the window only bounds training.
    """
    import keras
    from keras import layers

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    positions = keras.Input(shape=(None,), dtype="int32", name="positions")
    x = layers.Concatenate(name="step_input")([
        layers.Embedding(vocab, TOKEN_EMBEDDING, name="token_embedding")(tokens),
        layers.Embedding(BAR_POSITIONS, POSITION_EMBEDDING, name="position_embedding")(positions),
    ])
    states = layers.LSTM(UNITS, return_sequences=True, name="lstm")(x)
    states = layers.Dropout(0.1, name="dropout")(states)
    probs = pointer_layer_class()(vocab, name="pointer")([states, tokens])
    return keras.Model({"tokens": tokens, "positions": positions}, probs, name="lstm_pointer")
