"""Watching the MIDI system: whether it is still there, and which ports it has right now.

A studio loses things while playing: the JACK server (or PipeWire) restarts, a USB keyboard is
unplugged, a DAW quits. :class:`lofi_live.midi.live_ports.MidiPorts` asks a monitor, a few times a second
and whenever the monitor wakes it, what is there, and turns the differences into :class:`PortEvent`\\ s.

What each backend offers:

* JACK: a client of the JACK-Client package (no ports of its own) gets the server's shutdown callback
  (a stopped, killed or crashed server is known within milliseconds); it lists the ports, and while
  the server is down it tries to connect again (``no_start_server``: it never starts one itself).
  Without the package (no ``libjack.so.0`` found), a probe client is opened on each poll instead.
* every backend: the port lists are polled (rtmidi pushes no changes; the ALSA sequencer itself is
  there while ``/dev/snd/seq`` is).

On JACK the process holds two libjack copies: the system's (JACK-Client) and the one python-rtmidi's
wheel carries. Each survives the other's server restart: with one copy for all clients, closing the
dead clients under a new server crashed it. Both print their complaints about a lost server on stderr,
over the terminal view; they are dropped instead (:func:`silence_jack_messages`).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("lofi_live.midi.ports")

#: What a :class:`PortEvent` is about: the whole MIDI system, or one of the two ports.
SCOPES = ("system", "input", "output")
#: Human names of the MIDI systems, for the one-line messages.
SYSTEM_NAMES = {"jack": "the JACK server", "alsa": "the ALSA sequencer", "coremidi": "CoreMIDI",
                "winmm": "Windows MIDI"}


@dataclass(frozen=True)
class PortEvent:
    """Something the musician must know about: ``kind`` ``lost`` or ``back``, for ``scope`` (one of
    :data:`SCOPES`), ``name`` saying what in words ("the JACK server", "MIDI input 'Keys:out'").

    ``missing``: the MIDI system back while an ``--in``/``--out`` port of it is not there yet, the
    ``(scope, name)`` of each such port (its own ``back`` follows when it returns)."""

    kind: str
    scope: str
    name: str
    missing: tuple[tuple[str, str], ...] = ()


def stable_name(name: str, backend: str) -> str:
    """A port's name without the numbers a backend gives it anew when the device comes back.

    ALSA lists ``Keystation:Keystation MIDI 1 20:0``, and the ``20:0`` (client and port number)
    changes when the device is plugged in again; Windows MM appends the device index
    (``USB Keys 1``), which changes when devices are added or removed. JACK and CoreMIDI names stay.
    """
    if backend == "alsa":
        return re.sub(r" \d+:\d+$", "", name)
    if backend == "winmm":
        return re.sub(r" \d+$", "", name)
    return name


def returned_port(resolved: str, wanted: str, names: list[str], backend: str) -> str | None:
    """The port to reconnect to among ``names``: the same name, else the same device with a new
    number, else the one port matching what ``--in``/``--out`` asked for; None while none is there."""
    from lofi_live.errors import LofiError
    from lofi_live.midi.ports import match_port

    if resolved in names:
        return resolved
    same_device = [name for name in names if stable_name(name, backend) == stable_name(resolved, backend)]
    if len(same_device) == 1:
        return same_device[0]
    try:
        return match_port(wanted, names, "port")
    except LofiError:
        return None


# --------------------------------------------------------------------------------------------
# libjack's messages


_silenced: list[bool] = []


def silence_jack_messages() -> None:
    """Keep both libjack copies' error and info messages off the terminal.

    Their message functions are called from libjack's own threads, also while another thread waits
    for those threads inside libjack holding Python's lock (python-rtmidi closes a client so): a
    Python function there would wait for that lock forever. So the function given is C's
    ``strlen``, which reads the message and returns, and the messages are dropped."""
    if _silenced:
        return
    _silenced.append(True)
    try:
        drop = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
    except (OSError, AttributeError):  # pragma: no cover - no C library to borrow it from
        return
    try:
        import jack

        for setter in (jack._lib.jack_set_error_function, jack._lib.jack_set_info_function):
            setter(jack._ffi.cast("void(*)(const char *)", drop))
    except (ImportError, OSError, AttributeError):
        pass
    try:
        import rtmidi
    except ImportError:  # pragma: no cover - a broken install
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(rtmidi.__file__)))
    for path in glob.glob(os.path.join(here, "python_rtmidi*", "libjack*.so*")):
        try:
            library = ctypes.CDLL(path)  # the copy rtmidi already loaded: the same handle
            library.jack_set_error_function(ctypes.c_void_p(drop))
            library.jack_set_info_function(ctypes.c_void_p(drop))
        except (OSError, AttributeError):
            continue


# --------------------------------------------------------------------------------------------
# Monitors


class ListingMonitor:
    """Polls the port lists through one long-lived pair of rtmidi clients (ALSA, CoreMIDI, Windows MM,
    and JACK without the JACK-Client package)."""

    def __init__(self, backend: str):
        from lofi_live.midi.ports import PortLister

        self.backend = backend
        self._lister_class = PortLister
        self._lister: Any = PortLister(backend)

    def alive(self) -> bool:
        """Whether the MIDI system is still there (checked on every poll)."""
        if self.backend == "alsa":
            return os.path.exists("/dev/snd/seq")
        if self.backend == "jack":
            from lofi_live.midi.ports import jack_running

            return jack_running()
        return True

    def sources(self) -> list[str]:
        return self._lister.inputs()

    def destinations(self) -> list[str]:
        return self._lister.outputs()

    def lost(self) -> None:
        """The system is gone; its dead clients are closed once it is back (see :class:`JackMonitor`)."""

    def reconnect(self) -> bool:
        """Try to reach the system again (called while it is gone); True once it answers."""
        if not self.alive():
            return False
        try:
            lister = self._lister_class(self.backend)
        except Exception:  # noqa: BLE001 - still not there
            return False
        self.close()
        self._lister = lister
        return True

    def close(self) -> None:
        if self._lister is not None:
            self._lister.close()
            self._lister = None


class FrameCounter:
    """JACK's frame time as a count that does not wrap (it is 32 bits: 25 hours at 48 kHz)."""

    def __init__(self) -> None:
        self._last = 0
        self._wraps = 0

    def unwrap(self, frames: int) -> int:
        if frames < self._last and self._last - frames > 1 << 31:
            self._wraps += 1
        self._last = frames
        return (self._wraps << 32) + frames


#: JACK-Client clients of servers that went away: never closed, kept (see :meth:`JackMonitor._forget`).
_FORGOTTEN: list[Any] = []


class JackMonitor:
    """The JACK server through a port-less JACK-Client client: its shutdown callback wakes the watcher
    and decides that the server is gone; it also lists the ports, and reads JACK's sample clock for
    the input reader (:meth:`frame_seconds`)."""

    def __init__(self, name: str, wake: threading.Event):
        import jack

        self._jack = jack
        self._name = name
        self._wake = wake
        self._down = threading.Event()
        self._client: Any = None
        self._lock = threading.Lock()  # the reader's frame_seconds against a client being swapped or closed
        self._rate = 0
        self._frames = FrameCounter()
        if not self.reconnect():
            from lofi_live.errors import LofiError

            raise LofiError("--backend jack: no JACK server running")

    def _open(self) -> Any:
        from lofi_live.midi.ports import quiet_stderr

        with quiet_stderr():
            client = self._jack.Client(self._name, no_start_server=True)
        client.set_shutdown_callback(self._on_shutdown)
        # Not activated: the shutdown callback reaches a client outside the process graph, and the
        # graph stays as it was (one client more in it costs every cycle on a loaded machine). Port
        # registration callbacks would need it, so port lists are polled, as on the other backends.
        return client

    def _on_shutdown(self, status: Any, reason: str) -> None:  # noqa: ARG002 - JACK's thread: flag and wake only
        self._down.set()
        self._wake.set()

    def alive(self) -> bool:
        return self._client is not None and not self._down.is_set()

    def frame_seconds(self) -> float | None:
        """When the current JACK process cycle began, by the server's sample clock, in seconds (None
        while the server is gone). A message read from rtmidi right after it arrived arrived in this
        cycle. This clock is the one a DAW or ``jack_midi_clock`` places its ticks by; a server that
        stalls delays every cycle in wall time but not on it (measured: stopping the dummy server for
        0.36 to 1.6 tick periods shifted every later tick's arrival by that much, and their frame
        times not at all)."""
        with self._lock:
            if not self.alive():
                return None
            frames = self._client.last_frame_time
            return self._frames.unwrap(frames) / self._rate

    def sources(self) -> list[str]:
        return [port.name for port in self._client.get_ports(is_midi=True, is_output=True)]

    def destinations(self) -> list[str]:
        return [port.name for port in self._client.get_ports(is_midi=True, is_input=True)]

    def lost(self) -> None:
        """Leave the dead client alone: closing it while the server shuts down deadlocks both (the
        server waits for it), and closing it under a new server crashes libjack. It is forgotten
        when the server is back (:meth:`reconnect`)."""

    def reconnect(self) -> bool:
        try:
            client = self._open()
        except Exception:  # noqa: BLE001 - JackOpenError: no server yet
            return False
        with self._lock:
            dead, self._client = self._client, client
            self._rate = client.samplerate
            self._frames = FrameCounter()  # a new server counts from 0
            if dead is not None:
                self._forget(dead)
            self._down.clear()
        return True

    def _forget(self, client: Any) -> None:
        """Never close ``client``, a client of a server that went away (see :meth:`lost`), not even
        through JACK-Client's ``__del__``; keep the object, and with it the shutdown callback that
        libjack still points to, for the life of the process (a few bytes per server restart)."""
        client._ptr = self._jack._ffi.NULL
        _FORGOTTEN.append(client)

    def close(self) -> None:
        """Close the client, unless its server went away: libjack crashes closing a client of a
        stopped server once a new server runs under the same name (a segfault at exit), and blocks
        while the old one is still shutting down. Such a client is forgotten instead."""
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        if self._down.is_set():
            self._forget(client)
            return
        with contextlib.suppress(Exception):
            client.close()


def make_monitor(backend: str, name: str, wake: threading.Event) -> JackMonitor | ListingMonitor:
    """The best monitor the backend offers (JACK: JACK-Client when it loads, else polling)."""
    if backend == "jack":
        silence_jack_messages()
        try:
            return JackMonitor(f"{name} watch", wake)
        except (ImportError, OSError):  # no JACK-Client, or no libjack.so.0 for it
            log.debug("JACK-Client is not usable: polling the JACK server instead")
    return ListingMonitor(backend)


#: What the watcher calls with each event (the engine queues it for its own thread).
EventSink = Callable[[PortEvent], None]
