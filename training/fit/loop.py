"""``lofi-train fit``: train a preset on one or more corpora, with checkpoints, history and curves.

A run directory holds everything the later steps need, so export and sweep never re-read corpora:

* ``run.json``: vocabulary, window, encoding, preset, corpora, data summary (validation file
  names included), options, the command line, epochs done, plus the export's ``seed_windows``
  and ``baselines`` computed from the training tokens;
* ``weights-improvement-{epoch:02d}-{loss:.4f}.keras``: one checkpoint per improving epoch (the
  seed's naming; validation loss decides "improving" when there is a validation set; for the
  ``*-seq`` presets the loss of the last window position, ``val_last_loss``, decides);
* ``last.keras``: the latest epoch with its optimizer state, used to resume;
* ``history.csv`` and ``curves.png``: loss and accuracy per epoch, training vs validation; epochs
  count from 1, as in the checkpoint names.

Running ``fit`` again on a run directory resumes it up to ``--epochs`` with the run's own corpora and
data and model options: an option this command sets to another value than the run's is refused
(one line naming each), and a run option this command leaves at its default is kept and named.
``--init-from`` fine-tunes another run's weights (same preset and vocabulary, e.g. a
model pre-trained on POP909 fine-tuned on LoFi loops); ``--vocab-from`` / ``--vocab-corpus`` share
one vocabulary between such runs.

A corpus given as a shard folder (``prepare --shard-files``) is streamed, never held whole
(:mod:`training.fit.stream`); ``--strategy mirrored|multiworker`` trains under ``tf.distribute`` with a step of
our own, the chief alone writing the run folder (:mod:`training.fit.strategy`).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lofi_live.errors import LofiError
from lofi_live.model.format import encode_inputs
from training.fit import sequences, variation
from training.corpus.prepare import corpus_tokens, load_corpus
from training.presets import PRESETS, SEQUENCE_PRESETS, compile_model, get_preset
from training.runs import (
    RUN_FORMAT,
    best_checkpoint,
    load_model,
    load_run,
    plot_curves,
    read_history,
    renumber_history,
    write_json,
)
from training.fit.options import check_same_data, new_options, resume_options
from training.fit.strategy import STRATEGIES, check_tf_config, distributed_fit, is_chief, make_strategy, scope

if TYPE_CHECKING:
    from training.fit.stream import StreamedWindows

SEED_WINDOWS = 64


def _corpus_label(path: Path) -> str:
    """``corpora/pop909.json.gz`` -> ``pop909``: the prefix of file names when several corpora are given."""
    return path.name.removesuffix(".gz").removesuffix(".json")


def _run_of(source: Path) -> dict[str, Any]:
    """The run.json of a run folder, or of the run folder that holds a checkpoint file."""
    return load_run(source if source.is_dir() else source.parent)


def _vocabulary_of(source: Path) -> list[str]:
    return list(_run_of(source)["vocabulary"])


def build_data(
    options: dict[str, Any], vocabulary: list[str] | None
) -> tuple[dict[str, Any], sequences.WindowSet, sequences.WindowSet]:
    """Corpora -> (run.json data fields, train windows, validation windows) under the given options."""
    paths = [Path(p) for p in options["corpora"]]
    corpora = [load_corpus(p) for p in paths]
    kinds = {corpus_tokens(c) for c in corpora}
    if len(kinds) > 1:
        raise LofiError(f"the corpora mix tokenizations ({', '.join(sorted(kinds))}): prepare them all with one --tokens")
    labels = [_corpus_label(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    files = sequences.corpus_files(corpora, labels)
    train, val = sequences.split_by_file(files, options["val_fraction"], options["val_files"], options["seed"])
    if options.get("loop_short"):
        train, val = sequences.loop_short(train, options["window"]), sequences.loop_short(val, options["window"])
    if int(options.get("loop_times") or 1) > 1:
        train = sequences.loop_files(train, int(options["loop_times"]))
    train_aug = sequences.augment(train, options["transpose"])
    validation_names = [f.name for f in val]
    if options.get("vary_loops"):  # loops played 2..K times with variation, all files in one shuffled stream
        train_aug = variation.loop_stream(train_aug, int(options["vary_loops"]), int(options.get("vary_rounds") or 1),
                                          options["seed"])
        val = variation.validation_stream(val)
    if vocabulary is None:
        extra: list[sequences.TokenFile] = []
        for path in options["vocab_corpora"]:
            extra += sequences.augment(sequences.corpus_files([load_corpus(path)], ["vocab"]), options["transpose"])
        lists = [f.tokens for f in train_aug + val + extra]
        vocabulary = sequences.build_vocabulary(lists, options["min_count"])
    window = options["window"]
    stride = int(options.get("stride") or 1)
    train_windows = sequences.make_windows(train_aug, vocabulary, window, stride)
    if not len(train_windows):
        raise LofiError(f"no training file has more than {window} tokens: lower --window, add files "
                        "or repeat short files with --loop-short")
    if options["oversample"]:
        train_windows = sequences.oversample(train_windows, options["oversample"])
    val_windows = sequences.make_windows(val, vocabulary, window)
    plain = sequences.make_windows(train, vocabulary, window)
    if not len(plain):  # loops shorter than the window (--vary-loops): the seed windows come from the stream
        plain = train_windows
    picks = np.linspace(0, len(plain) - 1, num=min(SEED_WINDOWS, len(plain))).round().astype(int)
    fields = {
        "tokens": kinds.pop(),
        "vocabulary": vocabulary,
        "data": {
            "corpus": ", ".join(str(p) for p in paths),
            "corpora": [str(p.resolve()) for p in paths],
            "files": len(files),
            "tokens": sum(len(f.tokens) for f in files),
            "train_files": len(train),
            "validation_files": validation_names,
            "train_windows": len(train_windows),
            "stride": stride,
            "validation_windows": len(val_windows),
            "transpose": options["transpose"],
            "oversample": options["oversample"],
            "loop_short": bool(options.get("loop_short")),
            "loop_times": int(options.get("loop_times") or 1),
            "vary_loops": int(options.get("vary_loops") or 0),
            "vary_rounds": int(options.get("vary_rounds") or 1),
            "vocab_corpora": [str(Path(p).resolve()) for p in options["vocab_corpora"]],
            # a file of at most `window` tokens gives no window (--loop-short repeats it until it does; under
            # --vary-loops the files are one stream, which gives windows)
            "train_files_without_window": 0 if options.get("vary_loops") else sum(len(f.tokens) <= window for f in train),
            "validation_files_without_window": sum(len(f.tokens) <= window for f in val),
        },
        "seed_windows": plain.inputs(plain.starts[picks]).tolist() if len(plain) else [],
        # fitted on the training tokens as trained on (in all 12 keys with --transpose)
        "baselines": sequences.baselines(train_aug, vocabulary),
    }
    return fields, train_windows, val_windows


def make_dataset(
    windows: sequences.WindowSet | StreamedWindows, encoding: str, vocab: int, batch_size: int, shuffle: bool,
    seed: int, sequence: bool = False, position: bool = False,
) -> Any:
    """A tf.data pipeline cutting windows out of the flat index array batch by batch.

    Inputs are the graph's encoding of the tokens (:func:`lofi_live.model.format.encode_inputs`, the
    function the runtime feeds the exported graphs with). Targets are ``[N]`` (the token after the
    window), or ``[N, window]`` with ``sequence`` (the next token at every position, ``ids[s+1 : s+window+1]``).
    With ``position`` the inputs are ``{"tokens", "positions"}``: each step's position in its bar beside it.
    """
    if not isinstance(windows, sequences.WindowSet):  # streamed shards: training.fit.stream.StreamedWindows
        if position:
            raise LofiError("a preset with bar positions trains on corpus files: merge the shards (lofi-train merge)")
        return windows.dataset(encoding, batch_size, shuffle, seed, sequence)
    import tensorflow as tf

    ids = tf.constant(windows.ids)
    encoded = tf.constant(encode_inputs(windows.ids, encoding, vocab))
    steps = tf.constant(windows.positions if windows.positions is not None else np.zeros(len(windows.ids), np.int32))
    offsets = tf.range(windows.window, dtype=tf.int64)
    data = tf.data.Dataset.from_tensor_slices(windows.starts)
    if shuffle:
        data = data.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)

    def cut(starts: Any) -> tuple[Any, Any]:
        inputs = tf.gather(encoded, starts[:, None] + offsets[None, :])
        if sequence:
            targets = tf.gather(ids, starts[:, None] + 1 + offsets[None, :])
        else:
            targets = tf.gather(ids, starts + windows.window)
        if position:
            return {"tokens": inputs, "positions": tf.gather(steps, starts[:, None] + offsets[None, :])}, targets
        return inputs, targets

    return data.batch(batch_size).map(cut).prefetch(2)


def shared_vocabulary(vocab_from: Path | None, init_from: Path | None) -> list[str] | None:
    """The vocabulary imposed by ``--vocab-from`` and/or ``--init-from`` (they must agree), else None."""
    vocabulary = _vocabulary_of(vocab_from) if vocab_from else None
    if init_from:
        init_vocabulary = _vocabulary_of(init_from)
        if vocabulary is not None and vocabulary != init_vocabulary:
            raise LofiError(f"{init_from}: its vocabulary differs from that of --vocab-from {vocab_from}")
        vocabulary = init_vocabulary
    return vocabulary


def _base_preset(name: str) -> str:
    return name.removesuffix("-seq")


def fine_tuning_start(source: Path, preset: str, window: int) -> Any:
    """Another run's best checkpoint (or the given one), recompiled with a fresh optimizer.

    ``small`` and ``small-seq`` (and ``medium`` / ``medium-seq``) have the same weights, so either
    can start the other: the weights are copied into a freshly built model of the run's preset.
    """
    checkpoint = source if source.is_file() else best_checkpoint(source)
    source_run = load_run(checkpoint.parent)
    if _base_preset(source_run["preset"]) != _base_preset(preset) or source_run["window"] != window:
        raise LofiError(f"{checkpoint}: a {source_run['preset']} model with window {source_run['window']} cannot "
                        f"start a {preset} run with window {window} (use the same --preset and --window)")
    model = load_model(checkpoint)
    if source_run["preset"] != preset:
        rebuilt = get_preset(preset).build(len(source_run["vocabulary"]), window)
        rebuilt.set_weights(model.get_weights())
        return rebuilt
    compile_model(model, "seed" if preset == "seed" else "adam", sequence=preset in SEQUENCE_PRESETS)
    return model


def fit(args: argparse.Namespace) -> int:
    """Start, resume or fine-tune a run (see the module docstring).

    The command, the run folder and the data are checked before TensorFlow is imported, so they are
    named even where the ``[train]`` extra is missing.
    """
    from training.tfsetup import quiet_keras, require

    run_dir: Path = args.output
    chief = is_chief(args.strategy)  # under --strategy multiworker only the chief writes the run folder
    stored = load_run(run_dir) if (run_dir / "run.json").exists() else None
    resume = stored is not None and (run_dir / "last.keras").exists()
    if stored is not None:
        kept = resume_options(stored, args)
        options, vocabulary = stored["options"], stored["vocabulary"]
        print(f"{run_dir}: " + (f"resuming the run after epoch {stored['epochs_done']}" if resume
                                else "restarting the run (no epoch was saved)")
              + " on its own corpora and options" + (f" (kept from the run: {', '.join(kept)})" if kept else ""))
    else:
        if chief and run_dir.exists() and any(run_dir.iterdir()):
            raise LofiError(f"{run_dir}: folder exists and is not a run (no run.json): choose another -o")
        options = new_options(args)
        vocabulary = shared_vocabulary(args.vocab_from, args.init_from)
    if any(Path(p).is_dir() for p in options["corpora"]):  # shard folders: streamed, never held whole
        from training.fit.stream import build_stream_data

        fields, train_windows, val_windows = build_stream_data(options, vocabulary)
    else:
        fields, train_windows, val_windows = build_data(options, vocabulary)
    if stored is not None:
        check_same_data(stored, fields, run_dir)
    data = fields["data"]
    if data["train_files_without_window"] or data["validation_files_without_window"]:
        print(f"{run_dir}: {data['train_files_without_window']} of {data['train_files']} training files and "
              f"{data['validation_files_without_window']} of {len(data['validation_files'])} validation files have "
              f"at most {options['window']} tokens and give no window"
              + ("" if options.get("loop_short") else " (--loop-short repeats them until they do)"))
    preset = get_preset(options["preset"])
    keras = quiet_keras(options["seed"])
    strategy = make_strategy(args.strategy)  # before any other TensorFlow work, as tf.distribute requires
    require("matplotlib")  # curves.png, drawn when training ends: a missing one must not cost the run
    vocab = len(fields["vocabulary"])
    epochs_done = int(stored["epochs_done"]) if resume else 0
    with scope(strategy):
        if resume:
            model = load_model(run_dir / "last.keras", compile=True)
        elif options["init_from"]:
            model = fine_tuning_start(Path(options["init_from"]), preset.name, options["window"])
            print(f"{run_dir}: fine-tuning from {options['init_from']}")
        else:
            model = preset.build(vocab, options["window"])
        if not resume and options.get("learning_rate"):
            compile_model(model, "seed" if preset.name == "seed" else "adam", sequence=preset.sequence,
                          learning_rate=options["learning_rate"])
        if strategy is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables mirrored too, made here not in a step
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "format": RUN_FORMAT,
        "preset": preset.name,
        "window": options["window"],
        "grid_beats": 0.5,
        "input_encoding": preset.input_encoding,
        **fields,
        "options": options,
        "command": stored["command"] if stored else args.command_line,
        "resumed_by": [*stored.get("resumed_by", []), args.command_line] if stored else [],
        "epochs_done": epochs_done,
        "versions": {"keras": keras.__version__, "tensorflow": _tf_version()},
    }
    if chief:
        write_json(run_dir / "run.json", run)
    if epochs_done >= args.epochs:
        print(f"{run_dir}: already trained {epochs_done} epochs; raise --epochs to train more")
        return 0
    batch_size = args.batch_size or preset.batch_size
    # A resumed run shuffles with another seed, so it does not replay the first epochs' order.
    shuffle_seed = options["seed"] + epochs_done
    train_data = make_dataset(train_windows, preset.input_encoding, vocab, batch_size, True, shuffle_seed,
                              preset.sequence, preset.position)
    steps_per_epoch = None
    if args.epoch_windows and args.epoch_windows < len(train_windows):
        train_data = train_data.repeat()
        steps_per_epoch = -(-args.epoch_windows // batch_size)
    val_data = (make_dataset(val_windows, preset.input_encoding, vocab, batch_size, False, options["seed"],
                             preset.sequence, preset.position) if len(val_windows) else None)
    # Sequence presets keep the checkpoint whose last window position (what the live engine
    # predicts from) scores best: their all-position loss mostly rates predictions from short context.
    monitor = ("val_" if val_data is not None else "") + ("last_loss" if preset.sequence else "loss")
    if chief:
        renumber_history(run_dir)  # a run begun when history.csv counted epochs from 0 goes on counting from 1
    history = read_history(run_dir)
    best = min((row[monitor] for row in history if monitor in row), default=None)
    print(f"{run_dir}: {preset.name} preset, vocabulary {vocab}, {len(train_windows)} training windows "
          f"(stride {fields['data']['stride']}), "
          f"{len(val_windows)} validation windows, epochs {epochs_done + 1}..{args.epochs}")
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "weights-improvement-{epoch:02d}-{loss:.4f}.keras"), monitor=monitor, mode="min",
            save_best_only=True, initial_value_threshold=best,
        ),
        _History(run_dir / "history.csv", keras),
        _EpochEnd(run_dir, run, keras),
    ]
    if strategy is None:
        model.fit(train_data, validation_data=val_data, epochs=args.epochs, initial_epoch=epochs_done,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks, shuffle=False,
                  verbose=1 if sys.stdout.isatty() else 2)
    else:
        distributed_fit(strategy, model, train_data, val_data, steps_per_epoch or -(-len(train_windows) // batch_size),
                        -(-len(val_windows) // batch_size), epochs_done, args.epochs, preset.sequence, callbacks, chief)
    if not chief:
        return 0
    plot_curves(read_history(run_dir), run_dir / "curves.png")
    print(f"{run_dir}: best checkpoint {best_checkpoint(run_dir).name}; curves in {run_dir / 'curves.png'}")
    return 0


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _History(file: Path, keras: Any) -> Any:
    """Keras's CSVLogger, appending, with epochs counted from 1 as the checkpoint names count them."""

    class History(keras.callbacks.CSVLogger):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            super().on_epoch_end(epoch + 1, logs)

    return History(str(file), append=True)


def _EpochEnd(run_dir: Path, run: dict[str, Any], keras: Any) -> Any:
    """A callback that saves ``last.keras`` and the epoch count after every epoch (for resuming)."""

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.model.save(run_dir / "last.keras")
            run["epochs_done"] = epoch + 1
            run["metrics"] = {k: float(v) for k, v in (logs or {}).items() if math.isfinite(float(v))}
            write_json(run_dir / "run.json", run)

    return EpochEnd()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpora", type=Path, nargs="+", metavar="CORPUS",
                        help="corpus files from lofi-train prepare; a shard folder (prepare --shard-files) is streamed")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="RUN_DIR",
                        help="run folder (an existing run is resumed)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="default: small, or the --init-from run's preset. "
                        + "; ".join(f"{k}: {v[2]}" for k, v in PRESETS.items()))
    parser.add_argument("--epochs", type=int, default=20, help="train until this many epochs in all (default 20)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's, 64)")
    parser.add_argument("--epoch-windows", type=int, metavar="N",
                        help="make an epoch N shuffled training windows instead of all of them (large corpora)")
    parser.add_argument("--window", type=int, default=32, help="tokens per input window (default 32)")
    parser.add_argument("--stride", type=int, metavar="N",
                        help="training windows start every N tokens (default: 1 = every window; "
                        "window/2 for the *-seq presets, which learn from every position); validation uses all")
    parser.add_argument("--transpose", action="store_true", help="add every training file in all 12 keys (-5..+6)")
    parser.add_argument("--loop-short", action="store_true",
                        help="repeat files shorter than a window (e.g. 1-bar loops) until they give windows")
    parser.add_argument("--loop-times", type=int, default=1, metavar="K",
                        help="play every training file K times in a row, padded to whole bars (loop corpora: "
                        "teaches carrying a loop on; default 1)")
    parser.add_argument("--vary-loops", type=int, default=0, metavar="K",
                        help="play every training file 2..K times, each repeat varied (onsets dropped or shifted, "
                        "chords thinned), all files in one shuffled stream; validation files are played twice "
                        "(loop corpora: teaches copying a loop and varying it; default 0: off)")
    parser.add_argument("--vary-rounds", type=int, default=1, metavar="R",
                        help="with --vary-loops, R such streams, each with its own order and changes (default 1)")
    parser.add_argument("--oversample", type=int, metavar="MAX_CLASS",
                        help="repeat windows of next tokens seen fewer than MAX_CLASS times up to MAX_CLASS")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of files held out for validation, chosen by a hash of their path (default 0.1)")
    parser.add_argument("--val-files", metavar="GLOB", action="append",
                        help="hold out the files whose corpus path matches GLOB instead (repeatable: any GLOB; "
                        "with several corpora the path reads NAME:path, NAME = corpus file name without .json)")
    parser.add_argument("--min-count", type=int, default=1,
                        help="keep tokens seen this often; rarer ones become their nearest kept token (default 1)")
    parser.add_argument("--vocab-corpus", type=Path, action="append", default=[], metavar="CORPUS",
                        help="also take vocabulary tokens from this corpus (repeatable), e.g. the fine-tuning data")
    parser.add_argument("--vocab-from", type=Path, metavar="RUN_DIR", help="use the vocabulary of another run")
    parser.add_argument("--init-from", type=Path, metavar="RUN_DIR_OR_CHECKPOINT",
                        help="fine-tune: start from another run's best checkpoint (or this .keras file)")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help="optimizer step size (default: the preset's, Adam 2e-3); e.g. 5e-4 to fine-tune")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the split, shuffling and weights")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none",
                        help="none (default): one process; mirrored: every GPU of this machine; multiworker: one "
                        "process per machine, the cluster read from TF_CONFIG, worker 0 writes the run folder")


def run(args: argparse.Namespace) -> int:
    optional = (args.batch_size, args.epoch_windows, args.stride, args.loop_times, args.vary_rounds)
    if args.epochs < 1 or args.window < 1 or any(v is not None and v < 1 for v in optional):
        raise LofiError("--epochs, --window, --batch-size, --epoch-windows, --stride and --loop-times must be at least 1")
    if args.learning_rate is not None and not 0 < args.learning_rate < 1:
        raise LofiError(f"--learning-rate must be in (0, 1), not {args.learning_rate:g}")
    if not 0 <= args.val_fraction < 1:
        raise LofiError(f"--val-fraction must be in [0, 1), not {args.val_fraction:g}")
    if args.strategy == "multiworker":
        check_tf_config()
    for source in filter(None, (args.init_from, args.vocab_from)):
        if not source.exists():
            raise LofiError(f"{source}: no such run folder or checkpoint")
    return fit(args)
