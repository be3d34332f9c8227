"""Export of the ``lstm-pointer`` preset: a window graph and an exact incremental step graph.

Both graphs are traced from the Keras model's own layers (:mod:`training.pointer`) and give the head's
parts separately, so the runtime can move the copy gate with ``--variation`` (docs/MODEL_FORMAT.md,
"Copy gate"):

* window graph: inputs ``tokens`` and ``positions`` ``[N, L]`` (int32, any ``1 <= L <= window``); outputs, for the
  last position, ``probs`` (the network's own mixture), ``vocab_probs`` (the vocabulary softmax), ``copy_probs``
  (the copy mass, summing to ``1 - gate``) and ``gate`` ``[N]``;
* step graph: one token and its bar position, the LSTM state ``h0``/``c0`` and a cache of the last ``window - 1``
  steps' keys with the token that followed each (``keys [N, M, D]``, ``nexts [N, M]`` int32, ``valid [N, M]``
  float, 1 for a filled slot); the same four outputs, the new state ``h0_out``/``c0_out`` and this step's
  ``key`` ``[N, D]``, which enters the cache once the next token is known. The cache's slot order does not
  matter (attention sums over it), so the runtime keeps it as a ring.

A context of ``L`` tokens fed to the step graph from zero state and an empty cache gives the window graph's
answer on those tokens: the export checks that, and the window graph against Keras, before writing.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from lofi_live.model.pointer import POINTER_OUTPUTS

def parity_lengths(window: int) -> list[int]:
    """Context lengths the parity checks compare: every one up to 16, then every 16th, and the full window."""
    return sorted({*range(1, min(16, window) + 1), *range(16, window + 1, 16), window})


def _layers(model: Any) -> tuple[Any, Any, Any, Any]:
    return (model.get_layer("token_embedding"), model.get_layer("position_embedding"), model.get_layer("lstm"),
            model.get_layer("pointer"))


def _head(pointer: Any, vocab: int, state: Any, keys: Any, following: Any, valid: Any | None) -> list[Any]:
    """The pointer-sentinel head for one query state ``[N, U]`` over keys ``[N, M, D]`` (see training.pointer)."""
    import tensorflow as tf

    scale = 1.0 / float(pointer.key_dim) ** 0.5
    query = pointer.query(state)
    scores = tf.squeeze(tf.matmul(keys, query[:, :, None]), -1) * scale
    if valid is not None:
        scores = scores + (1.0 - valid) * -1e9
    sentinel = tf.reduce_sum(query * pointer.sentinel, axis=-1, keepdims=True) * scale
    weights = tf.nn.softmax(tf.concat([scores, sentinel], axis=-1), axis=-1)
    gate = weights[:, -1]
    # scatter-add of each step's weight onto the token that followed it
    rows = tf.broadcast_to(tf.range(tf.shape(following)[0])[:, None], tf.shape(following))
    where = tf.reshape(tf.stack([rows, following], axis=-1), [-1, 2])
    copy = tf.tensor_scatter_nd_add(tf.zeros([tf.shape(following)[0], vocab]), where, tf.reshape(weights[:, :-1], [-1]))
    vocab_probs = tf.nn.softmax(pointer.logits(state), axis=-1)
    return [gate[:, None] * vocab_probs + copy, vocab_probs, copy, gate]


def window_function(model: Any, vocab: int) -> Callable[[Any, Any], list[Any]]:
    """The last position's head parts for contexts ``tokens``/``positions`` ``[N, L]``, then every step's key
    and the LSTM state after the last token: what the step graph needs to go on from this context."""
    import keras
    import tensorflow as tf

    tokens_layer, positions_layer, lstm, pointer = _layers(model)
    # the same weights in a layer that also returns its final state
    stateful = keras.layers.LSTM(lstm.units, return_sequences=True, return_state=True)
    stateful.build((None, None, lstm.input.shape[-1]))
    stateful.set_weights(lstm.get_weights())

    def window(tokens: Any, positions: Any) -> list[Any]:
        states, h, c = stateful(tf.concat([tokens_layer(tokens), positions_layer(positions)], axis=-1), training=False)
        keys = pointer.key(states)
        # every step's key; the last step has no next token yet, so it is masked out (no empty tensors at L = 1)
        length = tf.shape(tokens)[1]
        following = tf.concat([tokens[:, 1:], tokens[:, -1:]], axis=1)
        earlier = tf.cast(tf.range(length) < length - 1, tf.float32)[None, :] * tf.ones_like(states[:, :, 0])
        return [*_head(pointer, vocab, states[:, -1], keys, following, earlier), keys, h, c]

    return window


def step_function(model: Any, vocab: int) -> Callable[..., list[Any]]:
    """One token through the embeddings and the LSTM cell, then the head over the cache (module docstring)."""
    import tensorflow as tf

    tokens_layer, positions_layer, lstm, pointer = _layers(model)

    def step(token: Any, position: Any, h0: Any, c0: Any, keys: Any, nexts: Any, valid: Any) -> list[Any]:
        x = tf.concat([tokens_layer(token[:, 0]), positions_layer(position[:, 0])], axis=-1)
        state, (h, c) = lstm.cell(x, [h0, c0], training=False)
        return [*_head(pointer, vocab, state, keys, nexts, valid), h, c, pointer.key(state)]

    return step


def specs(window: int, units: int, key_dim: int) -> tuple[list[Any], list[Any]]:
    """The input signatures of the window graph and of the step graph (names as docs/MODEL_FORMAT.md)."""
    import tensorflow as tf

    cache = window - 1
    window_specs = [tf.TensorSpec([None, None], tf.int32, name="tokens"),
                    tf.TensorSpec([None, None], tf.int32, name="positions")]
    step_specs = [tf.TensorSpec([None, 1], tf.int32, name="token"), tf.TensorSpec([None, 1], tf.int32, name="position"),
                  tf.TensorSpec([None, units], tf.float32, name="h0"), tf.TensorSpec([None, units], tf.float32, name="c0"),
                  tf.TensorSpec([None, cache, key_dim], tf.float32, name="keys"),
                  tf.TensorSpec([None, cache], tf.int32, name="nexts"),
                  tf.TensorSpec([None, cache], tf.float32, name="valid")]
    return window_specs, step_specs


def step_through(step: Any, tokens: np.ndarray, positions: np.ndarray, units: int, key_dim: int,
                 cache: int) -> np.ndarray:
    """Feed contexts ``[N, T]`` to the step graph token by token from zero state and an empty cache.

    Returns the network's probabilities after every token ``[N, T, V]`` (entry ``t``: the first ``t + 1``).
    The cache is filled in order here (slot ``t - 1`` gets step ``t - 1``'s key and token ``t``).
    """
    count = tokens.shape[0]
    h = np.zeros((count, units), np.float32)
    c = np.zeros((count, units), np.float32)
    keys = np.zeros((count, cache, key_dim), np.float32)
    nexts = np.zeros((count, cache), np.int32)
    valid = np.zeros((count, cache), np.float32)
    found = []
    key = None
    names = [*POINTER_OUTPUTS, "h0_out", "c0_out", "key"]
    for t in range(tokens.shape[1]):
        if key is not None:
            keys[:, t - 1], nexts[:, t - 1], valid[:, t - 1] = key, tokens[:, t], 1.0
        out = step.run(names, {"token": tokens[:, t:t + 1].astype(np.int32), "position": positions[:, t:t + 1].astype(np.int32),
                               "h0": h, "c0": c, "keys": keys, "nexts": nexts, "valid": valid})
        found.append(out[0])
        h, c, key = out[4], out[5], out[6]
    return np.stack(found, axis=1)


def parity(model: Any, window_graph: Any, step_graph: Any, tokens: np.ndarray, positions: np.ndarray,
           units: int, key_dim: int) -> tuple[float, float]:
    """(ONNX window graph vs Keras, step graph vs window graph): largest differences over :func:`parity_lengths`."""
    window = tokens.shape[1]
    stepped = step_through(step_graph, tokens, positions, units, key_dim, window - 1)
    worst_window = worst_step = 0.0
    for length in parity_lengths(window):
        feeds = {"tokens": tokens[:, :length].astype(np.int32), "positions": positions[:, :length].astype(np.int32)}
        probs = window_graph.run(["probs"], feeds)[0]
        expected = np.asarray(model(feeds, training=False))[:, -1]
        worst_window = max(worst_window, float(np.abs(probs - expected).max()))
        worst_step = max(worst_step, float(np.abs(stepped[:, length - 1] - probs).max()))
    return worst_window, worst_step


def graphs(model: Any, vocab: int, window: int, seed_windows: np.ndarray,
           convert: Callable[..., bytes], session: Callable[[bytes], Any]) -> tuple[bytes, bytes, float, float, dict]:
    """Trace both graphs and check them on the seed windows (positions: a bar from each window's start).

    Returns (window graph, step graph, window-vs-Keras parity, step-vs-window parity, the JSON's pointer section).
    """
    from lofi_live.model.pointer import POINTER_OUTPUTS as outputs
    from training.pointer import BAR_POSITIONS

    lstm, pointer = model.get_layer("lstm"), model.get_layer("pointer")
    units, key_dim = int(lstm.units), int(pointer.key_dim)
    window_specs, step_specs = specs(window, units, key_dim)
    window_graph = convert(window_function(model, vocab), window_specs, [*outputs, "keys", "h0_out", "c0_out"])
    step_graph = convert(step_function(model, vocab), step_specs, [*outputs, "h0_out", "c0_out", "key"])
    tokens = seed_windows[:8].astype(np.int32)
    positions = np.tile(np.arange(window) % BAR_POSITIONS, (len(tokens), 1)).astype(np.int32)
    found = parity(model, session(window_graph), session(step_graph), tokens, positions, units, key_dim)
    return window_graph, step_graph, found[0], found[1], {"units": units, "key_dim": key_dim}
