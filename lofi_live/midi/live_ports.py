"""The ports of a live session: opened, kept, watched, and reopened after the MIDI system or a device goes away.

The virtual input is the client ``NAME`` with a port ``NAME`` (JACK: ``LoFi Live:LoFi Live``, the port
you play into); the virtual output is the client ``NAME Out`` with a port ``NAME``. ``--in``/``--out``
attach to existing ports instead (:func:`lofi_live.midi.ports.match_port`).

:class:`MidiPorts` keeps references to the opened ports for the whole session (a garbage-collected mido
input silently stops calling back). A watcher thread asks the monitor (:mod:`lofi_live.midi.port_watch`)
what is there, whenever it is woken and at least every ``poll_seconds``:

* the MIDI system gone (the JACK server stopped or crashed): both ports are dropped at once, so
  sending is a no-op; the dead clients are closed while it is down; once it answers again, the
  virtual ports are created under the same names and the ``--in``/``--out`` ports reconnected;
* an ``--in``/``--out`` port gone (a device unplugged, a program quit): that port is dropped; when a
  port of the same name, or the same device under a new number (ALSA, Windows), is there again, it
  is reopened.

Each change is a :class:`lofi_live.midi.port_watch.PortEvent` handed to ``on_event`` (``lofi-live run``
gives the engine's, which holds the session safely meanwhile). A DAW disconnecting from and
reconnecting to a virtual port changes nothing: the port belongs to this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from lofi_live.errors import LofiError
from lofi_live.midi.input_reader import PolledInput
from lofi_live.midi.port_watch import SYSTEM_NAMES, EventSink, ListingMonitor, PortEvent, make_monitor, returned_port
from lofi_live.midi.ports import (
    DEFAULT_NAME, LOOPMIDI_HINT, _mido_backend, _unavailable, backend_name, match_port, quiet_stderr,
)

log = logging.getLogger("lofi_live.midi.ports")

#: How often the watcher looks at least (seconds); JACK's callbacks wake it sooner.
POLL_SECONDS = 0.25
#: The longest a port may take to close (libjack takes about a second for a client of a dead server).
CLOSE_SECONDS = 3.0
#: The longest the watcher waits (seconds) before it retries after failures of its own.
WATCH_BACKOFF_MAX = 5.0


def _jack_name(appeared: set[str], client: str, port: str) -> str | None:
    """The name JACK gave a virtual port just opened: ``client:port``, or ``client-01:port`` when
    another program already has that client name (JACK renames the newcomer). None if unclear."""
    found = [name for name in appeared
             if name.partition(":")[2] == port and re.fullmatch(re.escape(client) + r"(-[0-9]+)?", name.partition(":")[0])]
    return found[0] if len(found) == 1 else None


def _close_quietly(port: Any) -> None:
    """Close a port whose MIDI system may be gone (libjack then takes about a second, and complains)."""
    if port is not None:
        with contextlib.suppress(Exception), quiet_stderr():
            port.close()


def _close_within(ports: list[Any], seconds: float) -> bool:
    """Close ``ports`` one after the other on a helper thread, waiting at most ``seconds``: a dead
    client that never answers must not hang the session (the helper is a daemon: it dies with the
    process). False when they were not all closed in time."""
    ports = [port for port in ports if port is not None]
    if not ports:
        return True
    closer = threading.Thread(target=lambda: [_close_quietly(port) for port in ports], name="lofi-port-close", daemon=True)
    closer.start()
    closer.join(seconds)
    return not closer.is_alive()


#: Ports of a MIDI system that went away, left open at exit (see :func:`_forget`).
_FORGOTTEN: list[Any] = []


def _forget(ports: list[Any]) -> None:
    """Leave ``ports``, clients of a JACK server that went away, unclosed for the life of the process
    (which is ending): libjack closes such a client under a new server of the same name only now and
    then without a crash (SIGBUS: a clean-clone CI run lost the process so), and takes about a second
    for each while no server runs. Their reading threads stop; the objects are given a reference
    nobody drops, so that no destructor closes them at interpreter exit either."""
    for port in ports:
        if isinstance(port, PolledInput):
            port.stop()
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(port))
        _FORGOTTEN.append(port)


@dataclass
class PortSpec:
    kind: str  # "input" or "output"
    wanted: str | None  # --in/--out text, None for a virtual port
    resolved: str | None = None

    def describe(self) -> str:
        return f"MIDI {self.kind} {self.resolved or self.wanted!r}"


class MidiPorts:
    """The engine's input and output: virtual or existing, kept open, reopened after faults.

    ``callback(message, stamp)`` is called by the input thread for every message, with the
    ``time.perf_counter`` time the MIDI system received it (:mod:`lofi_live.midi.input_reader`); it
    must only queue it.
    ``send(message)`` is safe from any thread and a no-op while the output is gone.
    ``on_event(PortEvent)`` is called by the watcher thread when something goes away or comes back.
    """

    def __init__(
        self,
        backend: str | None,
        callback: Callable,
        in_port: str | None = None,
        out_port: str | None = None,
        name: str = DEFAULT_NAME,
        poll_seconds: float = POLL_SECONDS,
        on_event: EventSink | None = None,
    ):
        self.backend = backend_name(backend)
        if self.backend == "winmm" and (in_port is None or out_port is None):
            raise LofiError(LOOPMIDI_HINT)
        self.name = name
        self._callback = callback
        self.on_event = on_event
        self._lock = threading.Lock()
        self._mido = _mido_backend(self.backend)
        self._wake = threading.Event()
        # the ports are opened with rtmidi's own listing; the monitor comes after them (on JACK, a
        # client of the system's libjack opened before rtmidi's left rtmidi's clients now and then
        # without process cycles)
        self._monitor: Any = ListingMonitor(self.backend)
        self._listing: Any = None  # JACK: the first listing, closed at exit (closing a client mid-session
        # while another one's process thread waits for Python's lock can get that one dropped by the server)
        self.input_spec = PortSpec("input", in_port)
        self.output_spec = PortSpec("output", out_port)
        self.input: Any = None
        self.output: Any = None
        self.faults = 0
        self.system_up = True
        self._stale: list[Any] = []  # ports of a MIDI system that went away, closed when it is back
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        try:
            self.input = self._open(self.input_spec)
            self.output = self._open(self.output_spec)
            if self.backend == "jack":  # the listing's rtmidi clients stay open for the session, as the ports do
                self._listing, self._monitor = self._monitor, make_monitor(self.backend, name, self._wake)
        except BaseException:
            self.close()
            raise
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

    def _names(self, kind: str) -> list[str]:
        """Ports there now: sources for an input, destinations for an output."""
        return self._monitor.sources() if kind == "input" else self._monitor.destinations()

    def _open(self, spec: PortSpec) -> Any:
        port = self._open_port(spec)
        return PolledInput(port, self._callback, self.frame_seconds) if spec.kind == "input" else port

    def frame_seconds(self) -> float | None:
        """JACK's sample clock (seconds; the current process cycle's start), when the monitor reads one:
        for the input reader's stamps and the scheduler's wait for a stalled server (any thread)."""
        frame_seconds = getattr(self._monitor, "frame_seconds", None)
        return frame_seconds() if frame_seconds is not None else None

    def _open_port(self, spec: PortSpec) -> Any:
        is_input = spec.kind == "input"
        client = self.name if is_input else f"{self.name} Out"
        try:
            if spec.wanted is None:
                # our virtual input is a port others write to (a destination), our output a source
                listed = "output" if is_input else "input"
                before = set(self._names(listed)) if self.backend == "jack" else set()
                with quiet_stderr():
                    if is_input:
                        port = self._mido.open_input(self.name, virtual=True, client_name=client, callback=self._arrived)
                    else:
                        port = self._mido.open_output(self.name, virtual=True, client_name=client)
                if self.backend == "jack":
                    spec.resolved = _jack_name(set(self._names(listed)) - before, client, self.name)
                return port
            if spec.resolved is None:
                spec.resolved = match_port(spec.wanted, self._names(spec.kind), spec.kind)
            # no client_name here: mido turns any port given a client_name into a virtual one
            with quiet_stderr():
                if is_input:
                    return self._mido.open_input(spec.resolved, callback=self._arrived)
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

    def _arrived(self, message: Any) -> None:
        """mido's callback, for what arrives before :class:`PolledInput` takes over the port."""
        self._callback(message, time.perf_counter())

    # -- use --------------------------------------------------------------------------------

    def send(self, message: Any) -> bool:
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

    # -- watching ---------------------------------------------------------------------------

    def _emit(self, event: PortEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        else:
            said = "is gone; waiting for it to come back" if event.kind == "lost" else "is back"
            log.warning("%s %s%s", event.name, said, "".join(f"; {name} is not back yet" for _, name in event.missing))

    def _take(self, attr: str) -> Any:
        with self._lock:
            port = getattr(self, attr)
            setattr(self, attr, None)
        return port

    def _watch(self, poll_seconds: float) -> None:
        """The watcher thread: notice what went away, bring it back when it returns.

        A failure of the watcher itself (an odd answer of a MIDI system) is said once at WARNING, as
        it leaves what goes away unnoticed; the watcher then retries with backoff (twice as long
        after each failure in a row, at most :data:`WATCH_BACKOFF_MAX` seconds) and says when it works
        again."""
        failures = 0
        wait = poll_seconds
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._look()
            except Exception as error:  # noqa: BLE001 - the watcher must outlive any odd answer of a MIDI system
                failures += 1
                if failures == 1:
                    log.warning("the MIDI port watcher failed (%s: %s): retrying with backoff; a port that goes "
                                "away meanwhile is not noticed", type(error).__name__, error)
                log.debug("port watcher", exc_info=True)
                wait = min(WATCH_BACKOFF_MAX, poll_seconds * 2 ** failures)
                continue
            if failures:
                log.warning("the MIDI port watcher works again (after %d failures in a row)", failures)
            failures, wait = 0, poll_seconds

    def _look(self) -> None:
        """One look at the MIDI system and the named ports."""
        if self.system_up and not self._monitor.alive():
            self._system_lost()
        if not self.system_up:
            if self._monitor.reconnect():
                self._system_back()
            return
        for spec, attr in ((self.input_spec, "input"), (self.output_spec, "output")):
            if spec.wanted is not None:
                self._follow(spec, attr)

    def _system_lost(self) -> None:
        """Drop both ports at once; their dead clients are closed once the system is back (closing a
        JACK client while its server shuts down deadlocks both)."""
        self.system_up = False
        self._stale += [port for port in (self._take("input"), self._take("output"), self._listing) if port is not None]
        self._listing = None
        self._emit(PortEvent("lost", "system", SYSTEM_NAMES[self.backend]))
        self._monitor.lost()

    def _system_back(self) -> None:
        """The system answers again: the virtual ports under their names, the named ones if they are there."""
        stale, self._stale = self._stale, []  # one at a time, before opening new ones (libjack: about a second each)
        if not _close_within(stale, CLOSE_SECONDS * len(stale)):
            log.debug("the dead clients of the MIDI system did not close in time: going on without them")
        opened: dict[str, Any] = {}
        for spec, attr in ((self.input_spec, "input"), (self.output_spec, "output")):
            if spec.wanted is not None:
                found = returned_port(spec.resolved or spec.wanted, spec.wanted, self._names(spec.kind), self.backend)
                if found is None:
                    continue  # not back yet: followed as a lost port from now on
                spec.resolved = found
            try:
                opened[attr] = self._open(spec)
            except LofiError as error:  # down again already, or refused: try again on the next poll
                log.debug("reopening after the MIDI system came back: %s", error)
                for port in opened.values():
                    _close_quietly(port)
                self._monitor.lost()
                return
        with self._lock:
            for attr, port in opened.items():
                setattr(self, attr, port)
        self.system_up = True
        missing = tuple((spec.kind, spec.describe()) for spec, attr in ((self.input_spec, "input"), (self.output_spec, "output"))
                        if attr not in opened)
        self._emit(PortEvent("back", "system", SYSTEM_NAMES[self.backend], missing))

    def _follow(self, spec: PortSpec, attr: str) -> None:
        """An ``--in``/``--out`` port: dropped when it is no longer listed, reopened when it is again."""
        names = self._names(spec.kind)
        port = getattr(self, attr)
        if port is not None:
            if spec.resolved not in names:
                self._take(attr)
                self._emit(PortEvent("lost", spec.kind, spec.describe()))
                _close_quietly(port)
            return
        candidate = returned_port(spec.resolved or spec.wanted, spec.wanted, names, self.backend)
        if candidate is None:
            return
        spec.resolved = candidate
        try:
            reopened = self._open(spec)
        except LofiError as error:  # listed but not openable yet: the next poll tries again
            log.debug("%s", error)
            return
        with self._lock:
            setattr(self, attr, reopened)
        self._emit(PortEvent("back", spec.kind, spec.describe()))

    def close(self, drain: float = 0.2) -> None:
        """Close both ports; first give the MIDI system ``drain`` seconds to deliver what was sent
        (JACK sends from its process cycle: closing at once would drop the last note-offs; 50 ms was
        not always enough for a loaded, non-real-time JACK server)."""
        self._stop.set()
        self._wake.set()
        if self.output is not None and drain > 0:
            time.sleep(drain)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)  # it may be closing a dead client (about a second each)
        watching = self._watcher is not None and self._watcher.is_alive() and self._watcher is not threading.current_thread()
        if watching:  # still inside the monitor: closing its client under it would free what it is using
            log.debug("the MIDI port watcher did not stop in time: its monitor is left open")
        # The monitor before the ports, and bounded: libjack's jack_client_close was seen waiting forever
        # for a lock of its own when it closed the JACK-Client client just after the ports' clients
        # (whose removal the server was then notifying it of); the process rather exits without the
        # client than hangs.
        elif not _close_within([getattr(self, "_monitor", None)], CLOSE_SECONDS * 2):
            log.debug("the MIDI system monitor did not close in time")
        _forget(self._stale)
        ports = [self._take("input"), self._take("output"), getattr(self, "_listing", None)]
        self._stale, self._listing = [], None
        if not _close_within(ports, CLOSE_SECONDS * 3):
            log.debug("a MIDI port did not close in time")
