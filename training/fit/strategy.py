"""``fit --strategy mirrored|multiworker``: training under ``tf.distribute`` with a training step of our own.

``multiworker`` is ``tf.distribute.MultiWorkerMirroredStrategy``: one ``lofi-train fit`` process per machine,
the cluster read from ``TF_CONFIG`` as every TF launcher (Kubernetes jobs, SLURM scripts) sets it, gradients
summed over all workers after every batch. ``mirrored`` is ``MirroredStrategy``: every GPU of one machine.

Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica
...)", keras-team/keras#20585) whatever the input, so the epochs run here: ``strategy.run`` of one step
inside a ``tf.function`` over ``strategy.experimental_distribute_dataset``, with the same Keras layers,
optimizer (which sums the replicas' gradients itself) and loss. Each replica's loss is divided by the
global batch size, so a step moves the weights as one step on the whole batch does in a single process.
The metrics are computed as Keras computes them (``loss``, ``accuracy``, and ``last_loss`` /
``last_accuracy`` for sequence presets, each with ``val_``), and the epoch's logs go to the same Keras
callbacks as in a single process, on the chief only: checkpoints, ``history.csv``, ``run.json`` and
``curves.png`` keep their form. Every worker builds the same data with the same seed and keeps its share
of each batch, so all workers run the same number of steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, ContextManager, Sequence

from lofi_live.errors import LofiError

STRATEGIES = ("none", "mirrored", "multiworker")


def check_tf_config() -> None:
    """``TF_CONFIG`` names a worker cluster and this process's place in it; else a one-line error."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise LofiError("--strategy multiworker reads the cluster from TF_CONFIG, which is not set (see docs/TRAINING.md)")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        valid = (isinstance(workers, list) and workers and task["type"] in config["cluster"]
                 and 0 <= int(task["index"]) < len(config["cluster"][task["type"]]))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise LofiError('TF_CONFIG must read {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                        '"index": N}} with N below the number of workers')


def make_strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy of ``--strategy`` (None for ``none``); create it before any other TF work."""
    if name == "none":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    check_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def scope(strategy: Any) -> ContextManager[Any]:
    """Where the model and its optimizer are built or loaded, so their variables are mirrored."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_chief(name: str) -> bool:
    """Whether this process writes the run folder: always but under ``multiworker``, where only the ``chief``
    task does, or worker 0 when the cluster has no chief (read from ``TF_CONFIG``, checked before)."""
    if name != "multiworker":
        return True
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def distributed_fit(
    strategy: Any, model: Any, train_data: Any, val_data: Any, train_steps: int, val_steps: int,
    initial_epoch: int, epochs: int, sequence: bool, callbacks: Sequence[Any], chief: bool,
) -> None:
    """Train ``epochs - initial_epoch`` epochs of ``train_steps`` batches; callbacks only on the chief."""
    import keras
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_iterator = iter(strategy.experimental_distribute_dataset(train_data.repeat().with_options(options)))
    val_iterator = (iter(strategy.experimental_distribute_dataset(val_data.repeat().with_options(options)))
                    if val_data is not None else None)
    optimizer = model.optimizer

    def sums(targets: Any, probs: Any) -> dict[str, Any]:
        """Per-replica sums of each metric over the examples of a batch, and the example count."""
        losses = keras.losses.sparse_categorical_crossentropy(targets, probs)
        hits = tf.cast(tf.equal(tf.cast(targets, tf.int64), tf.argmax(probs, axis=-1)), tf.float32)
        found = {"count": tf.cast(tf.shape(targets)[0], tf.float32)}
        if sequence:
            found |= {"loss": tf.reduce_sum(tf.reduce_mean(losses, axis=-1)),
                      "accuracy": tf.reduce_sum(tf.reduce_mean(hits, axis=-1)),
                      "last_loss": tf.reduce_sum(losses[:, -1]), "last_accuracy": tf.reduce_sum(hits[:, -1])}
        else:
            found |= {"loss": tf.reduce_sum(losses), "accuracy": tf.reduce_sum(hits)}
        return found

    def train_step(inputs: Any, targets: Any) -> dict[str, Any]:
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            probs = model(inputs, training=True)
            found = sums(targets, probs)
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, found["count"])
            loss = found["loss"] / tf.maximum(total, 1.0)  # the replicas' gradients are summed: a global mean
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return found

    def val_step(inputs: Any, targets: Any) -> dict[str, Any]:
        return sums(targets, model(inputs, training=False))

    @tf.function
    def run_train(iterator: Any) -> dict[str, Any]:
        found = strategy.run(train_step, args=next(iterator))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in found.items()}

    @tf.function
    def run_val(iterator: Any) -> dict[str, Any]:
        found = strategy.run(val_step, args=next(iterator))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in found.items()}

    def mean(step: Any, iterator: Any, steps: int) -> dict[str, float]:
        totals: dict[str, float] = {}
        for _ in range(steps):
            for key, value in step(iterator).items():
                totals[key] = totals.get(key, 0.0) + float(value)
        count = max(totals.pop("count"), 1.0)
        return {key: value / count for key, value in totals.items()}

    if chief:
        for callback in callbacks:
            callback.set_model(model)
            callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        start = time.perf_counter()
        logs = mean(run_train, train_iterator, train_steps)
        if val_iterator is not None:
            logs |= {f"val_{key}": value for key, value in mean(run_val, val_iterator, val_steps).items()}
        print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
              + f" ({time.perf_counter() - start:.1f} s)", flush=True)
        if chief:
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
    if chief:
        for callback in callbacks:
            callback.on_train_end()
