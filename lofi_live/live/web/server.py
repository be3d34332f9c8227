"""The control surface's server: uvicorn on its own thread and event loop, started and stopped by ``run``.

The socket is bound on the caller's thread, so a taken port or an unknown host is a one-line error
before anything plays, and PORT 0 is known at once. The thread is started at normal priority (``run``
starts it outside the real-time priority it gives the engine's threads) and is a daemon: stopping
asks the event streams to end and uvicorn to exit, and waits a little; it never waits on the engine.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

from lofi_live.live.view import EngineStatus
from lofi_live.live.web import address as addresses
from lofi_live.live.web.app import Link, build, out_of_the_way
from lofi_live.live.web.control import knob_ranges
from lofi_live.live.web.guard import Guard, new_token
from lofi_live.live.web.sessions import Recordings

log = logging.getLogger("lofi_live")

#: Seconds ``stop`` waits for the server thread.
STOP_SECONDS = 3.0


class WebSurface:
    """``WebSurface(address, snapshot, control, ...)``, then :meth:`start`, :attr:`url` and :meth:`stop`."""

    def __init__(self, address: addresses.Address, snapshot: Callable[[], EngineStatus], control: Callable[[Any], None],
                 ranges: Mapping[str, tuple[float, float]] | None = None, n_models: int = 1,
                 folder: Path | None = None, current: Path | None = None, token: str | None = None) -> None:
        import uvicorn

        self.token = token or new_token()
        self.socket = addresses.bind(address)
        self.port = self.socket.getsockname()[1]
        self.host = address.host
        shown = addresses.url_host(address.host)
        self.url = f"http://{shown}:{self.port}/?token={self.token}"
        hosts = {f"{shown}:{self.port}"}
        if address.loopback:  # the same machine under its other names
            hosts |= {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]")}
        self.closing = threading.Event()
        self.recordings = Recordings(folder or Path.cwd(), current)
        app = build(Link(snapshot, control), self.token, knob_ranges(ranges, n_models), self.recordings, self.closing)
        guard = Guard(app, self.token, hosts, wait=lambda: out_of_the_way(snapshot()))
        config = uvicorn.Config(guard, lifespan="off", ws="none", log_level="warning",
                                access_log=False, timeout_graceful_shutdown=1, limit_concurrency=64,
                                server_header=False, timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="lofi-web", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except Exception as error:  # noqa: BLE001 - the instrument plays on without its surface
            log.warning("the control surface stopped: %s", error)

    def stop(self) -> None:
        """End the event streams and the server (at most :data:`STOP_SECONDS`), then its temporary files."""
        self.closing.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        self.socket.close()
        self.recordings.close()


def open_surface(text: str, engine: Any, ranges: Mapping[str, tuple[float, float]] | None, n_models: int,
                 record: str | None) -> WebSurface:
    """``--web``: bind, say where (one line with the URL and token; a warning off this machine), start."""
    address = addresses.parse(text)
    record_path = Path(record) if record else None
    surface = WebSurface(address, engine.snapshot, engine.control, ranges, n_models,
                         folder=record_path.parent if record_path else None, current=record_path)
    if not address.loopback:
        print(f"lofi-live: warning: the control surface listens on {address.host}, beyond this machine: anyone who "
              "can reach it and sees the URL can play this instrument (docs/WEB.md)", flush=True)
    print(f"lofi-live: control surface {surface.url}", flush=True)
    surface.start()
    return surface
