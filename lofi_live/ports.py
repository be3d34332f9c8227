"""MIDI ports on a chosen rtmidi API: virtual ports, existing ports, listing, and port-fault recovery.

Backends (``--backend`` or ``$LOFI_LIVE_MIDI_BACKEND``): ``alsa``, ``jack``, ``coremidi``, ``winmm``.
Without a choice: CoreMIDI on macOS, Windows MM on Windows, and on Linux the ALSA sequencer when
``/dev/snd/seq`` exists, else a running JACK server (PipeWire provides both).

Every failure to reach a MIDI system becomes a one-line :class:`LofiError` (never a hang): the
C libraries' own noise on stderr ("Cannot connect to server socket", "ALSA lib ...") is swallowed
while a port is being opened.

Port names. The virtual input is the client ``NAME`` with a port ``NAME`` (JACK: ``LoFi Live:LoFi Live``,
the port you play into); the virtual output is the client ``NAME Out`` with a port ``NAME``. ``--in``/``--out``
attach to existing ports instead: the exact name, else the one name containing the text (case-insensitive).

Port faults. :class:`MidiPorts` keeps references to the opened ports for the whole session (a
garbage-collected mido input silently stops calling back). For ports given with ``--in``/``--out`` a
watcher thread polls the port names twice a second through one long-lived rtmidi client (so polling
never creates JACK clients); when the port disappears, sending becomes a no-op, and when it comes
back it is reopened. A virtual port belongs to this process, so a DAW disconnecting and reconnecting
to it changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from lofi_live.errors import LofiError

log = logging.getLogger("lofi_live.ports")

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
POLL_SECONDS = 0.5


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=sorted(BACKENDS), default=None,
        help=f"MIDI system (rtmidi API); default ${BACKEND_ENV}, else CoreMIDI / Windows MM / "
        "ALSA when /dev/snd/seq exists / JACK",
    )


# --------------------------------------------------------------------------------------------
# Choosing and probing a backend


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level writes to file descriptor 2 (libjack, alsa-lib, RtMidi) for a moment.

    Only used around opening clients, at start-up or when a port is reopened.
    """
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


def _jack_name(appeared: set[str], client: str, port: str) -> str | None:
    """The name JACK gave a virtual port just opened: ``client:port``, or ``client-01:port`` when
    another program already has that client name (JACK renames the newcomer). None if unclear."""
    found = [name for name in appeared
             if name.partition(":")[2] == port and re.fullmatch(re.escape(client) + r"(-[0-9]+)?", name.partition(":")[0])]
    return found[0] if len(found) == 1 else None


def _mido_backend(name: str):
    import mido

    return mido.Backend(f"mido.backends.rtmidi/{BACKENDS[name]}", load=True)


# --------------------------------------------------------------------------------------------
# The ports of a session


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


def _install_raw_callback(port, callback: Callable) -> None:
    """Parse rtmidi's bytes ourselves so malformed data reaches ``callback`` (as MalformedMessage)."""
    rt = getattr(port, "_rt", None)
    if rt is None:
        return

    def wrapper(event, data=None):
        callback(parse_message(event[0]))

    try:
        rt.cancel_callback()
        rt.set_callback(wrapper)
    except Exception:  # noqa: BLE001 - keep mido's own callback then
        pass


@dataclass
class PortSpec:
    kind: str  # "input" or "output"
    wanted: str | None  # --in/--out text, None for a virtual port
    resolved: str | None = None


class MidiPorts:
    """The engine's input and output: virtual or existing, kept open, reopened after faults.

    ``callback(message)`` is called by the input thread for every message; it must only queue it.
    ``send(message)`` is safe from any thread and a no-op while an existing output port is gone.
    """

    def __init__(
        self,
        backend: str | None,
        callback: Callable,
        in_port: str | None = None,
        out_port: str | None = None,
        name: str = DEFAULT_NAME,
        poll_seconds: float = POLL_SECONDS,
    ):
        self.backend = backend_name(backend)
        if self.backend == "winmm" and (in_port is None or out_port is None):
            raise LofiError(LOOPMIDI_HINT)
        self.name = name
        self._callback = callback
        self._lock = threading.Lock()
        self._mido = _mido_backend(self.backend)
        self._lister = PortLister(self.backend)
        self.input_spec = PortSpec("input", in_port)
        self.output_spec = PortSpec("output", out_port)
        self.input = None
        self.output = None
        self.faults = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        try:
            self.input = self._open(self.input_spec)
            self.output = self._open(self.output_spec)
        except BaseException:
            self.close()
            raise
        if in_port is not None or out_port is not None:
            self._watcher = threading.Thread(target=self._watch, args=(poll_seconds,), name="lofi-port-watch", daemon=True)
            self._watcher.start()

    # -- naming -----------------------------------------------------------------------------

    @property
    def input_name(self) -> str:
        """What other programs see: the port to play into (JACK: as JACK named it)."""
        if self.input_spec.wanted is None and self.input_spec.resolved is None:
            return f"{self.name}:{self.name}" if self.backend == "jack" else self.name
        return self.input_spec.resolved or self.input_spec.wanted

    @property
    def output_name(self) -> str:
        """What other programs see: the port to listen to (JACK: as JACK named it)."""
        if self.output_spec.wanted is None and self.output_spec.resolved is None:
            return f"{self.name} Out:{self.name}" if self.backend == "jack" else self.name
        return self.output_spec.resolved or self.output_spec.wanted

    # -- opening ----------------------------------------------------------------------------

    def _open(self, spec: PortSpec):
        port = self._open_port(spec)
        if spec.kind == "input":
            _install_raw_callback(port, self._callback)
        return port

    def _open_port(self, spec: PortSpec):
        is_input = spec.kind == "input"
        client = self.name if is_input else f"{self.name} Out"
        try:
            if spec.wanted is None:
                # our virtual input is a port others write to, our output one they read from
                listed = self._lister.outputs if is_input else self._lister.inputs
                before = set(listed()) if self.backend == "jack" else set()
                with quiet_stderr():
                    if is_input:
                        port = self._mido.open_input(self.name, virtual=True, client_name=client, callback=self._callback)
                    else:
                        port = self._mido.open_output(self.name, virtual=True, client_name=client)
                if self.backend == "jack":
                    spec.resolved = _jack_name(set(listed()) - before, client, self.name)
                return port
            names = self._lister.inputs() if is_input else self._lister.outputs()
            spec.resolved = match_port(spec.wanted, names, spec.kind)
            # no client_name here: mido turns any port given a client_name into a virtual one
            with quiet_stderr():
                if is_input:
                    return self._mido.open_input(spec.resolved, callback=self._callback)
                return self._mido.open_output(spec.resolved)
        except LofiError:
            raise
        except NotImplementedError:
            raise LofiError(LOOPMIDI_HINT if self.backend == "winmm" else f"--backend {self.backend}: no virtual ports") from None
        except Exception as error:  # noqa: BLE001 - rtmidi errors (SystemError, InvalidPortError, IOError)
            if spec.wanted is None and "virtual" in str(error).lower() and self.backend == "winmm":
                raise LofiError(LOOPMIDI_HINT) from None
            raise _unavailable(self.backend, error) if spec.wanted is None else LofiError(
                f"cannot open MIDI {spec.kind} {spec.resolved or spec.wanted!r}: {error}"
            ) from None

    # -- use --------------------------------------------------------------------------------

    def send(self, message) -> bool:
        """Send one message; False when the output is gone (it is reopened when it comes back).

        ``faults`` counts the messages lost so (reported by ``lofi-live run`` at exit)."""
        with self._lock:
            port = self.output
        if port is None:
            with self._lock:
                self.faults += 1
            return False
        try:
            port.send(message)
            return True
        except Exception:  # noqa: BLE001 - a vanished port must not stop the engine
            with self._lock:
                self.faults += 1
            return False

    def _watch(self, poll_seconds: float) -> None:
        """Reopen existing ports that disappeared once they are back (polls the names)."""
        reported: set[str] = set()
        while not self._stop.wait(poll_seconds):
            for spec, attr in ((self.input_spec, "input"), (self.output_spec, "output")):
                if spec.wanted is None:
                    continue
                try:
                    names = self._lister.inputs() if spec.kind == "input" else self._lister.outputs()
                except Exception:  # noqa: BLE001
                    continue
                present = spec.resolved in names if spec.resolved else False
                port = getattr(self, attr)
                if port is not None and not present:
                    with self._lock:
                        setattr(self, attr, None)
                    log.warning("MIDI %s %r disappeared; waiting for it to come back", spec.kind, spec.resolved)
                    reported.discard(spec.kind)
                    with contextlib.suppress(Exception), quiet_stderr():
                        port.close()
                elif port is None:
                    try:
                        candidate = match_port(spec.wanted, names, spec.kind)
                    except LofiError:
                        continue
                    spec.resolved = candidate
                    try:
                        reopened = self._open(spec)
                    except LofiError as error:
                        if spec.kind not in reported:
                            log.warning("%s", error)
                            reported.add(spec.kind)
                        continue
                    with self._lock:
                        setattr(self, attr, reopened)
                    log.warning("MIDI %s %r is back: reopened", spec.kind, spec.resolved)

    def close(self, drain: float = 0.2) -> None:
        """Close both ports; first give the MIDI system ``drain`` seconds to deliver what was sent
        (JACK sends from its process cycle: closing at once would drop the last note-offs; 50 ms was
        not always enough for a loaded, non-real-time JACK server)."""
        self._stop.set()
        if self.output is not None and drain > 0:
            time.sleep(drain)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=2)
        for attr in ("input", "output"):
            with self._lock:
                port = getattr(self, attr, None)
                setattr(self, attr, None)
            if port is not None:
                with contextlib.suppress(Exception), quiet_stderr():
                    port.close()
        lister = getattr(self, "_lister", None)
        if lister is not None:
            lister.close()


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
