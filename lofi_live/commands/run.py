"""``lofi-live run``: wire the model, the ports, the engine and the session together, and play.

Prints the inference provider, the ports and the journal path at start (unless ``--quiet``), shows
the live terminal view on a terminal, and on Ctrl-C / SIGTERM / SIGHUP / an error stops the engine,
which sends a note-off for every sounding note and All Notes Off (CC 123) on every channel it used,
then writes the ``--record`` file.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import mido

from lofi_live.commands.run_controls import PARSER_DEFAULTS, learn_controls, load_controls
from lofi_live.live.conductor import MODES
from lofi_live.errors import LofiError
from lofi_live.timing.groove import DEFAULT_VELOCITY, HUMANIZE_MS, HUMANIZE_VELOCITY, swing_fraction
from lofi_live.model.loader import MODEL_HELP, PROVIDERS
from lofi_live.midi.ports import DEFAULT_NAME, add_backend_argument
from lofi_live.tokens.rules import check_bpm

log = logging.getLogger("lofi_live")


def _channel(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"MIDI channel {value} is not in 1..16")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    from lofi_live.model.loop_follow import DEFAULT_FOLLOW, DEFAULT_VARIATION, FOLLOW_CHOICES, parse_variation
    from lofi_live.model.sampling import DEFAULT_LEGATO, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, LEGATO_HELP, legato_share

    parser.description = (
        "Listen on a MIDI port and continue what is played on the 0.5-beat grid. Opens the virtual ports "
        f"'{DEFAULT_NAME}' (play into its input, route its output to an instrument) unless --in/--out name "
        "existing ones."
    )
    model = parser.add_argument_group("model and sampling")
    model.add_argument("--model", action="append", default=None,
                       help=MODEL_HELP + "; give it several times to switch models with the model_select control")
    model.add_argument("--provider", choices=PROVIDERS, default="auto", help="ONNX Runtime provider (default auto)")
    model.add_argument("--temperature", type=_non_negative, default=DEFAULT_TEMPERATURE, help=f"sampling temperature, 0 = argmax (default {DEFAULT_TEMPERATURE})")
    model.add_argument("--legato", type=legato_share, default=DEFAULT_LEGATO, help=LEGATO_HELP)
    model.add_argument("--variation", type=parse_variation, metavar="0..1", default=DEFAULT_VARIATION,
                       help="0 replays the loop the player just played, 1 leaves the answer to the network; a model "
                            "with a copy gate gets the same number (0.5: its own gate). The variation control moves it "
                            f"(default {DEFAULT_VARIATION})")
    model.add_argument("--follow", choices=FOLLOW_CHOICES, default=DEFAULT_FOLLOW,
                       help="continue mode, grid models: 'chord' answers with the heard loop and the network's variations "
                            f"within its chords and groove, 'off' with the network alone (default {DEFAULT_FOLLOW})")
    model.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"sample among the k most likely tokens (default {DEFAULT_TOP_K}; 0 = all)")
    model.add_argument("--seed", type=int, default=None, help="random seed for reproducible runs")
    model.add_argument("--key", default=None, help="lock to a key: C, F#, Bb..., or auto (detected from what is played)")
    model.add_argument("--scale", default=None, help="scale for --key (major, minor, dorian, ...; default minor; "
                       "with --key auto, the detected major or minor)")
    model.add_argument("--seed-midi", default=None, metavar="FILE", help="prime the window from a MIDI file, tokenized as the model's tokens say (grid or seed); "
                       "the model starts at once")
    model.add_argument("--simulate-slow-model", type=_non_negative, default=0.0, metavar="MS", help="add MS milliseconds to every inference (overload testing)")

    ports = parser.add_argument_group("MIDI ports")
    add_backend_argument(ports)
    ports.add_argument("--in", dest="in_port", default=None, metavar="NAME", help="listen to this existing port instead of a virtual one")
    ports.add_argument("--out", dest="out_port", default=None, metavar="NAME", help="play to this existing port instead of a virtual one")
    ports.add_argument("--name", default=DEFAULT_NAME, help=f"name of the virtual ports (default {DEFAULT_NAME!r})")
    ports.add_argument("--in-channel", type=_channel, default=None, metavar="CH", help="only listen to this channel (1-16; default all)")
    ports.add_argument("--out-channel", type=_channel, default=1, metavar="CH", help="channel the model plays on (1-16; default 1)")
    ports.add_argument("--thru", action="store_true", help="pass played notes through to the output")
    ports.add_argument("--metronome", type=_channel, default=None, metavar="CH", help="play a metronome on this channel (e.g. 10)")
    ports.add_argument("--echo-ms", type=_non_negative, default=30.0, help="feedback guard: ignore our own notes coming back within MS (default 30; 0 = off)")

    timing = parser.add_argument_group("clock and playing")
    timing.add_argument("--bpm", type=_positive, default=90.0, help="tempo of the internal clock (default 90; --clock link: the tempo while no "
                        "other peer is there)")
    timing.add_argument("--clock", choices=("internal", "midi", "link"), default="internal",
                        help="internal tempo, follow the DAW's MIDI clock (24 PPQN), or join the Ableton Link session on the local network "
                        "(tempo, bar phase, start/stop; needs the [link] extra)")
    timing.add_argument("--mode", choices=MODES, default="continue", help="call and response (default), or play along")
    timing.add_argument("--wait-beats", type=_positive, default=2.0, help="continue mode: silence (beats) that ends the player's phrase (default 2)")
    timing.add_argument("--release-ms", type=_positive, default=None, metavar="MS",
                        help="continue mode: the phrase also ends after MS milliseconds of silence, whatever the tempo")
    timing.add_argument("--response-bars", type=_positive, default=4.0, help="bars the model plays per response (default 4)")
    timing.add_argument("--gate", type=_positive, default=0.9, help="seed models: note length as a fraction of a grid step (default 0.9); a grid model's "
                        "notes last until its next onset or rest")
    timing.add_argument("--velocity", type=int, default=None, choices=range(1, 128), metavar="1-127",
                        help="velocity of the model's notes (default: the median velocity of the player's last phrase, "
                        f"{DEFAULT_VELOCITY} before anything is played); notes on the beat get a light accent")
    timing.add_argument("--swing", type=float, default=50.0, metavar="PCT",
                        help="the model's off-beat eighths lie PCT %% of the way through their beat, as on an MPC or in "
                        "Ableton's groove pool: 50 = straight (default), 66 = triplet feel, up to 75; notes played swung "
                        "still count for their own step")
    timing.add_argument("--humanize", action="store_true",
                        help=f"vary the model's velocities (up to {HUMANIZE_VELOCITY}) and onsets (up to {HUMANIZE_MS:g} ms, "
                        "never into another step), seeded by --seed")
    timing.add_argument("--offset-ms", type=float, default=0.0, help="shift the model's output by MS milliseconds (latency compensation; may be negative)")
    timing.add_argument("--max-note-beats", type=_positive, default=8.0, help="longest note the engine plays (model, metronome), in beats, before a note-off is "
                        "forced (default 8); a played note passed --thru lasts as long as it is held")
    timing.add_argument("--lost-key-bars", type=_positive, default=8.0, metavar="BARS",
                        help="a key held this many bars while no input at all arrives is taken as lost (its note-off "
                        "never came): said once and released, so the model answers again (default 8)")
    timing.add_argument("--duration", type=_positive, default=None, metavar="SECONDS", help="stop after SECONDS (scripts)")

    out = parser.add_argument_group("recording and display")
    out.add_argument("--record", default=None, metavar="FILE.mid", help="record the session: the journal FILE.mid.journal is written while playing, "
                     "FILE.mid at exit")
    out.add_argument("--quiet", action="store_true", help="no start-up lines and no terminal view")
    out.add_argument("--config", default=None, help="controls TOML file: CC mapping and option defaults "
                     "(default ~/.config/lofi-live/config.toml when it exists)")
    out.add_argument("--web", default=None, metavar="[HOST:]PORT",
                     help="serve the control surface in the browser (piano roll, knobs, sessions) on PORT of 127.0.0.1 "
                     "(0: a free port; another HOST must be named and is warned about); needs the [web] extra; docs/WEB.md")
    out.add_argument("--learn", action="store_true", help="first map the controller's knobs and buttons (one prompt per "
                     "action), save them to the config file, then play")
    out.add_argument("--learn-timeout", type=_positive, default=10.0, metavar="SECONDS",
                     help="--learn: skip an action after SECONDS without a control change (default 10)")
    PARSER_DEFAULTS.clear()
    PARSER_DEFAULTS.update({action.dest: action.default for action in parser._actions if action.dest != "help"})


def _check(args: argparse.Namespace) -> None:
    try:
        check_bpm(args.bpm)
    except ValueError as error:
        raise LofiError(f"--bpm: {error}") from None
    if args.top_k is not None and args.top_k < 0:
        raise LofiError("--top-k must be 0 (all) or more")
    grid_ms = 60000.0 / args.bpm * 0.5
    if abs(args.offset_ms) > grid_ms / 2:
        raise LofiError(f"--offset-ms {args.offset_ms:g}: at most half a grid step ({grid_ms / 2:.0f} ms at {args.bpm:g} BPM)")
    if args.clock == "midi" and args.offset_ms < 0:
        raise LofiError("--offset-ms cannot be negative with --clock midi (the grid is known only when the tick arrives)")
    if args.clock == "link":
        from lofi_live.timing.link import require

        require()  # before loading anything: one line naming the extra to install
    try:
        swing_fraction(args.swing)
    except ValueError as error:
        raise LofiError(str(error)) from None
    if args.web is not None:
        from lofi_live.live.web import check

        check(args.web)  # before loading anything: the extra, the address


class _Logging(logging.Handler):
    """One line per message on the terminal's stderr.

    While a port is opened or closed, C libraries' noise is kept off the terminal by pointing file
    descriptor 2 elsewhere for a moment (:func:`lofi_live.midi.ports.quiet_stderr`), from whichever thread
    does it; the lines are written to a copy of the original descriptor, so none is lost then. Under
    the live view (which takes ``sys.stderr`` to print above itself) they go through it."""

    def __init__(self) -> None:
        super().__init__()
        self._stderr = sys.stderr
        try:
            self._stream = open(os.dup(sys.stderr.fileno()), "w", buffering=1, closefd=True)
        except (AttributeError, OSError, ValueError):  # no real descriptor (an embedding, a test capture)
            self._stream = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self._stream if self._stream is not None and sys.stderr is self._stderr else sys.stderr
            print(f"lofi-live: {record.levelname.lower()}: {record.getMessage()}", file=stream, flush=True)
        except Exception:  # noqa: BLE001 - never let logging break playing
            pass


def _setup_logging(quiet: bool) -> None:
    root = logging.getLogger("lofi_live")
    if not any(isinstance(h, _Logging) for h in root.handlers):
        root.addHandler(_Logging())
    root.setLevel(logging.WARNING)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    from lofi_live.live.engine import Engine, EngineConfig
    from lofi_live.live.realtime import MAIN_PRIORITY, set_realtime
    from lofi_live.commands.generate import make_sampler
    from lofi_live.model.loader import Model
    from lofi_live.midi.live_ports import MidiPorts
    from lofi_live.model.sampling import DEFAULT_MAX_REPEAT
    from lofi_live.recording.session import Session

    controls = load_controls(args)
    _check(args)
    _setup_logging(args.quiet)
    # A crash inside a native library (libjack, Link, ONNX Runtime) prints every thread's Python stack
    # on stderr: a musician's bug report then says where (the recording is written before the ports close).
    faulthandler.enable(all_threads=True)
    # Threads hand the GIL over every 0.5 ms (default 5 ms), so the engine thread never waits long.
    sys.setswitchinterval(0.0005)

    models = [Model.load(path, provider=args.provider) for path in args.model]
    model = models[0]
    realtime = set_realtime(MAIN_PRIORITY)  # after the model: ONNX Runtime's thread pool stays normal
    sampler = make_sampler(model, args.temperature, args.top_k or None, args.seed, DEFAULT_MAX_REPEAT, args.legato)
    seed_tokens: list[str] = []
    if args.seed_midi:
        from lofi_live.tokens.midi import file_tokens

        seed_tokens = file_tokens(args.seed_midi, model.tokens)
        if not seed_tokens:
            raise LofiError(f"{args.seed_midi}: no notes to seed the model with")
    config = EngineConfig(
        bpm=args.bpm, clock=args.clock, mode=args.mode, wait_beats=args.wait_beats, release_ms=args.release_ms,
        response_bars=args.response_bars, gate=args.gate, velocity=args.velocity,
        out_channel=args.out_channel - 1, in_channel=None if args.in_channel is None else args.in_channel - 1,
        thru=args.thru, offset_ms=args.offset_ms, metronome=None if args.metronome is None else args.metronome - 1,
        max_note_beats=args.max_note_beats, lost_key_bars=args.lost_key_bars, echo_ms=args.echo_ms, simulate_slow_ms=args.simulate_slow_model,
        swing=args.swing, humanize=args.humanize, seed=args.seed, variation=args.variation, follow=args.follow,
    )
    key = args.key
    if key is not None and key.lower() == "auto":
        key = "auto"
    engine = Engine(model, sampler, send=lambda m: None, config=config, key=key, scale=args.scale,
                    controls=controls, models=models)
    if seed_tokens:
        engine.prime(seed_tokens)

    # Input goes to --learn's inbox first, then to the engine.
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    deliver = [(lambda message, stamp: inbox.put(message)) if args.learn else engine.on_message]
    ports = MidiPorts(args.backend, lambda message, stamp: deliver[0](message, stamp), args.in_port, args.out_port, args.name,
                      on_event=engine.on_port_event)
    session = surface = None
    stop = threading.Event()
    previous: dict[int, object] = {}
    try:
        engine.send = ports.send
        engine.scheduler.frame_clock = ports.frame_seconds  # --clock midi on JACK: steps wait for a stalled server
        if args.learn:
            print(f"lofi-live: ports ({ports.backend}): connect the controller to '{ports.input_name}'", flush=True)
            engine.controls = learn_controls(args, inbox)
            deliver[0] = engine.on_message
        session = Session(args.bpm, Path(args.record) if args.record else None, journal=bool(args.record))
        engine.session = session

        def on_signal(signum, frame):  # noqa: ARG001
            stop.set()
            engine.stop()

        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                previous[sig] = signal.signal(sig, on_signal)

        if not args.quiet:
            for number, each in enumerate(models):
                choice = f" (model_select {number})" if len(models) > 1 else ""
                print(f"lofi-live: model {each.name} ({len(each.vocabulary)} tokens, window {each.window}) "
                      f"on provider {each.provider.upper()}{choice}", flush=True)
            print(f"lofi-live: ports ({ports.backend}): play into '{ports.input_name}', "
                  f"listen to '{ports.output_name}'", flush=True)
            clock = {
                "midi": f"MIDI clock (default {args.bpm:g} BPM until ticks arrive)",
                "link": f"Ableton Link session, quantum 4 (its tempo; {args.bpm:g} BPM while no other peer is there)",
            }.get(args.clock, f"{args.bpm:g} BPM")
            print(f"lofi-live: {args.mode} mode, {clock}" + (f", seeded with {len(seed_tokens)} tokens" if seed_tokens else ""), flush=True)
            if session.journal_path is not None:
                print(f"lofi-live: recording to {args.record} (journal {session.journal_path})", flush=True)
            if not realtime:
                print("lofi-live: note: no real-time priority (see `ulimit -r`); timing may suffer on a busy machine", flush=True)
            print("lofi-live: Ctrl-C to stop", flush=True)

        engine.start()
        if args.web is not None:
            from lofi_live.live.web.server import open_surface

            with _normal_priority():  # its thread never competes with the engine's real-time ones
                surface = open_surface(args.web, engine, getattr(controls, "ranges", None), len(models), args.record)
        _play(engine, session, args, stop)
    finally:
        ended = _stop_engine(engine, ports.send)
        if surface is not None:
            surface.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        written = None
        try:  # the recording first: a MIDI system that fails while its ports close must not take it along
            if session is not None:
                written = session.close(end_beat=_end_beat(engine))
        finally:
            ports.close()
    if not args.quiet and ended:
        stats = engine.stats()
        print(f"lofi-live: stopped after {stats['steps']} steps ({stats['played_steps']} played, "
              f"{stats['late_steps']} late); inference median {stats['latency_median_ms']:.2f} ms, "
              f"p99 {stats['latency_p99_ms']:.2f} ms; emission error median {stats['emission_median_ms']:.3f} ms, "
              f"p99 {stats['emission_p99_ms']:.3f} ms; {stats['messages_in']} MIDI messages in"
              + (f", {stats['echoes_ignored']} own notes ignored" if stats['echoes_ignored'] else "")
              + (f"; MIDI clock: {stats['clock_duplicates']} duplicate ticks ignored, {stats['clock_lost']} lost ticks counted"
                 if args.clock == "midi" else "")
              + (f", {ports.faults} messages lost while the output port was gone" if ports.faults else ""), flush=True)
    if not args.quiet and written is not None:
        print(f"lofi-live: wrote {written}", flush=True)
    if engine.error is not None:
        print(f"lofi-live: error: the engine stopped: {type(engine.error).__name__}: {engine.error}", file=sys.stderr)
        return 1
    return 0


#: How long the main thread waits for the engine thread to end (it sends every note-off first).
STOP_SECONDS = 5.0


def _stop_engine(engine, send, seconds: float = STOP_SECONDS) -> bool:
    """Stop the engine; True once its thread has ended (it silenced every note itself).

    A thread that did not end in time still owns its state (the notes it sounds, its figures), so
    this thread never reaches into it: All Notes Off goes straight to the output port on all 16
    channels, and there are no figures to print."""
    engine.stop()
    if engine.join(seconds):
        return True
    log.warning("the engine did not stop within %g s: All Notes Off sent on every channel", seconds)
    for channel in range(16):
        send(mido.Message("control_change", channel=channel, control=123, value=0))
    return False


class _normal_priority:
    """Run a block (and the threads it starts) at normal priority, then restore this thread's."""

    def __enter__(self):
        self.saved = None
        try:
            policy = os.sched_getscheduler(0)
            if policy != os.SCHED_OTHER:
                self.saved = (policy, os.sched_getparam(0))
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            try:
                os.sched_setscheduler(0, self.saved[0], self.saved[1])
            except OSError:
                pass


def _end_beat(engine) -> float | None:
    try:
        return max(0.0, engine.clock.beat_at(time.perf_counter()))
    except Exception:  # noqa: BLE001
        return None


def _play(engine, session, args: argparse.Namespace, stop: threading.Event) -> None:
    """The main thread while playing: flush the journal, drive the view, honour --duration."""
    started = time.monotonic()
    view = None
    if not args.quiet and sys.stdout.isatty():
        try:
            from lofi_live.live.view import LiveView

            with _normal_priority():  # the view's refresh thread draws at normal priority
                view = LiveView()
                view.__enter__()
        except Exception:  # noqa: BLE001 - no view is no reason not to play
            view = None
    try:
        interval = min(0.1, 60.0 / args.bpm / 4)
        last_view = 0.0
        while not stop.is_set() and not engine.finished.is_set():
            stop.wait(interval)
            session.flush(_end_beat(engine))
            if view is not None and time.monotonic() - last_view > 0.12:
                last_view = time.monotonic()
                view.update(engine.snapshot())
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
    finally:
        if view is not None:
            view.__exit__(None, None, None)
