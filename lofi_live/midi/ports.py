"""MIDI systems and their ports on a chosen rtmidi API: choosing a backend, listing and matching ports.

Backends (``--backend`` or ``$LOFI_LIVE_MIDI_BACKEND``): ``alsa``, ``jack``, ``coremidi``, ``winmm``.
Without a choice: CoreMIDI on macOS, Windows MM on Windows, and on Linux the ALSA sequencer when
``/dev/snd/seq`` exists, else a running JACK server (PipeWire provides both).

Every failure to reach a MIDI system becomes a one-line :class:`LofiError` (never a hang): the
C libraries' own noise on stderr ("Cannot connect to server socket", "ALSA lib ...") is swallowed
while a port is being opened.

``--in``/``--out`` name existing ports: the exact name, else the one name containing the text
(case-insensitive). The ports of a live session, and what happens when they go away, are
:mod:`lofi_live.midi.live_ports`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from typing import Iterator

from lofi_live.errors import LofiError

log = logging.getLogger("lofi_live.midi.ports")

#: Environment variable choosing the backend when ``--backend`` is not given.
BACKEND_ENV = "LOFI_LIVE_MIDI_BACKEND"
#: Our backend names -> rtmidi API names (as mido spells them).
BACKENDS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
ALIASES = {"linux_alsa": "alsa", "unix_jack": "jack", "macosx_core": "coremidi", "core": "coremidi",
           "mac": "coremidi", "windows_mm": "winmm", "windows": "winmm", "mm": "winmm"}
DEFAULT_NAME = "LoFi Live"
LOOPMIDI_HINT = (
    "Windows MIDI has no virtual ports: create two ports in loopMIDI "
    "(https://www.tobias-erichsen.de/software/loopmidi.html), e.g. 'LoFi In' and 'LoFi Out', "
    "then run with --in 'LoFi In' --out 'LoFi Out'"
)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=sorted(BACKENDS), default=None,
        help=f"MIDI system (rtmidi API); default ${BACKEND_ENV}, else CoreMIDI / Windows MM / "
        "ALSA when /dev/snd/seq exists / JACK",
    )


# --------------------------------------------------------------------------------------------
# Choosing and probing a backend


#: Held while file descriptor 2 is swapped: one thread swaps it at a time (see :func:`quiet_stderr`).
_STDERR_SWAP = threading.RLock()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level writes to file descriptor 2 (libjack, alsa-lib, RtMidi) for a moment.

    Only used around opening and closing clients. Descriptor 2 belongs to the whole process, so one
    thread swaps it at a time: two overlapping swaps from two threads would restore each other's sink
    and leave stderr redirected for good. A second thread waits for the first to finish; the same
    thread may nest.
    """
    with _STDERR_SWAP:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield
            return
        try:
            with tempfile.TemporaryFile() as sink:
                os.dup2(sink.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
        finally:
            os.close(saved)


def backend_name(choice: str | None = None) -> str:
    """The backend to use: the explicit choice, else ``$LOFI_LIVE_MIDI_BACKEND``, else the platform's."""
    raw = (choice or os.environ.get(BACKEND_ENV, "")).strip().lower()
    if raw:
        name = ALIASES.get(raw, raw)
        if name not in BACKENDS:
            source = "--backend" if choice else f"${BACKEND_ENV}"
            raise LofiError(f"{source}: unknown MIDI backend {raw!r} (choose from {', '.join(sorted(BACKENDS))})")
        return name
    if sys.platform == "darwin":
        return "coremidi"
    if sys.platform.startswith("win"):
        return "winmm"
    if os.path.exists("/dev/snd/seq"):
        return "alsa"
    if jack_running():
        return "jack"
    raise LofiError(
        "no MIDI system found: no ALSA sequencer (/dev/snd/seq; try `sudo modprobe snd-seq`) "
        "and no JACK server running (start one, e.g. `jackd -d dummy`, or use PipeWire); "
        "then run again, or choose one with --backend"
    )


def _rtmidi():
    try:
        import rtmidi
    except ImportError as error:  # pragma: no cover - a broken install
        raise LofiError(f"python-rtmidi is not usable ({error}); reinstall with `pip install python-rtmidi`") from None
    return rtmidi


def _api(name: str) -> int:
    rtmidi = _rtmidi()
    api = getattr(rtmidi, "API_" + BACKENDS[name])
    if api not in rtmidi.get_compiled_api():
        compiled = [rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()]
        raise LofiError(f"--backend {name}: this python-rtmidi was built without it (it has: {', '.join(compiled) or 'none'})")
    return api


def jack_running() -> bool:
    """Whether a JACK server answers, checked without printing libjack's complaints."""
    try:
        rtmidi = _rtmidi()
        if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
            return False
        with quiet_stderr():
            probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="lofi-live-probe")
        probe.delete()
        return True
    except Exception:  # noqa: BLE001 - any failure means no server
        return False


def _unavailable(name: str, error: Exception) -> LofiError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hints = {
        "jack": "no JACK server running (start one: `jackd -d dummy`, qjackctl, or PipeWire's JACK; "
        "$JACK_DEFAULT_SERVER picks a named server)",
        "alsa": "no ALSA sequencer (/dev/snd/seq missing; try `sudo modprobe snd-seq`, or --backend jack)",
        "coremidi": "CoreMIDI is not available",
        "winmm": "Windows MIDI is not available",
    }
    return LofiError(f"--backend {name}: {hints[name]} [{detail}]")


class PortLister:
    """One long-lived rtmidi input and output client used to list port names cheaply and quietly."""

    def __init__(self, name: str):
        rtmidi = _rtmidi()
        api = _api(name)
        self.backend = name
        try:
            with quiet_stderr():
                self._in = rtmidi.MidiIn(api, name="lofi-live-list")
                self._out = rtmidi.MidiOut(api, name="lofi-live-list-out")
        except Exception as error:  # noqa: BLE001 - rtmidi.SystemError and friends
            raise _unavailable(name, error) from None

    def inputs(self) -> list[str]:
        """Ports we can read from (MIDI sources)."""
        return list(self._in.get_ports())

    def outputs(self) -> list[str]:
        """Ports we can write to (MIDI destinations)."""
        return list(self._out.get_ports())

    def close(self) -> None:
        for client in (self._in, self._out):
            with contextlib.suppress(Exception):
                client.delete()


def match_port(wanted: str, names: list[str], kind: str) -> str:
    """The port called ``wanted``, else the one port whose name contains it (case-insensitive)."""
    if wanted in names:
        return wanted
    lower = wanted.lower()
    found = [name for name in names if lower in name.lower()]
    if len(found) == 1:
        return found[0]
    listing = ", ".join(repr(n) for n in names) or "none"
    if not found:
        raise LofiError(f"no MIDI {kind} port matching {wanted!r} (available: {listing})")
    raise LofiError(f"MIDI {kind} port {wanted!r} is ambiguous: {', '.join(repr(n) for n in found)}")


def _mido_backend(name: str):
    import mido

    return mido.Backend(f"mido.backends.rtmidi/{BACKENDS[name]}", load=True)


# --------------------------------------------------------------------------------------------
# Messages as rtmidi hands them over


class MalformedMessage:
    """Bytes that are not a valid MIDI message (mido would drop them silently)."""

    type = "malformed"

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"<malformed MIDI data {self.data[:8].hex(' ')}>"


def parse_message(data):
    """One message from rtmidi's bytes: a mido Message, or a MalformedMessage (never raises)."""
    import mido

    try:
        return mido.Message.from_bytes(data)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError):
        try:
            raw = bytes(data)
        except (ValueError, TypeError, OverflowError):
            raw = b""
        return MalformedMessage(raw)


# --------------------------------------------------------------------------------------------
# `lofi-live ports`


def configure(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> int:
    name = backend_name(args.backend)
    if name == "winmm":
        print("note: " + LOOPMIDI_HINT)
    lister = PortLister(name)
    try:
        inputs, outputs = lister.inputs(), lister.outputs()
    finally:
        lister.close()
    hidden = ("lofi-live-list",)
    inputs = [n for n in inputs if not n.startswith(hidden)]
    outputs = [n for n in outputs if not n.startswith(hidden)]
    print(f"backend: {name}")
    print("MIDI inputs (sources to listen to, for --in):")
    for port in inputs or ["(none)"]:
        print(f"  {port}")
    print("MIDI outputs (destinations to play to, for --out):")
    for port in outputs or ["(none)"]:
        print(f"  {port}")
    return 0


def wait_for_port(lister: PortLister, wanted: str, kind: str, timeout: float) -> str:
    """Poll until a port matching ``wanted`` exists (used by tests and scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        names = lister.inputs() if kind == "input" else lister.outputs()
        try:
            return match_port(wanted, names, kind)
        except LofiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
