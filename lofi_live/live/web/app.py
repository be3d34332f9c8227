"""The routes of the control surface: the page, its assets and the API (``docs/WEB.md``).

=========================  ====================================================================
``GET /``                  the page (the token written into its asset and API addresses)
``GET /static/FILE``       its script and style, from the package
``GET /api/status``        the engine's latest published snapshot, as JSON
``GET /api/events``        the same as server-sent events (the last 64 steps' notes), up to 20 a second
``GET /api/controls``      the controls and their ranges
``POST /api/control``      ``{"name": ..., "value": ...}``: queued to the engine as a mapped CC's action
``GET /api/sessions``      the recorded sessions
``GET /api/sessions/N.mid``   session N as a two-track ``.mid``; ``.png``: its piano roll
=========================  ====================================================================

Everything here runs on the server's own thread and event loop; the engine is reached only through
:class:`Link`'s two calls.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lofi_live.live.view import EngineStatus
from lofi_live.live.web.control import BadControl, action_of, spec
from lofi_live.live.web.guard import Bucket, error_body, read_body
from lofi_live.live.web.sessions import ConversionFailed, Recordings

#: Largest request body accepted (a control is a few dozen bytes).
MAX_BODY = 1024
#: Controls per second on average, and at once; panic has its own allowance, so it always gets through.
CONTROL_RATE, CONTROL_BURST = 40.0, 20.0
PANIC_RATE, PANIC_BURST = 4.0, 4.0
#: How often the event stream looks for a new snapshot (seconds), and sends a keep-alive when there is none.
EVENT_SECONDS, KEEPALIVE_SECONDS = 0.05, 2.0
#: Seconds before and after each grid boundary that the server leaves the interpreter to the engine.
QUIET_BEFORE, QUIET_AFTER = 0.008, 0.001
#: Grid steps of the recent notes in each event (the page's roll shows 8 bars: 64 steps).
STREAM_STEPS = 64
#: Event streams open at once (each page holds one).
MAX_STREAMS = 8
STATIC = resources.files("lofi_live.live.web") / "static"


@dataclass
class Link:
    """What the surface may do to the engine: read its published snapshot, queue a control action."""

    snapshot: Callable[[], EngineStatus]
    control: Callable[[Any], None]


def status_dict(status: EngineStatus) -> dict[str, Any]:
    """The snapshot as JSON-ready values (every field, ``variation`` too once the engine has it; not the
    next boundary's time, which is this process's clock)."""
    out = {field.name: getattr(status, field.name) for field in fields(status) if field.name != "next_boundary"}
    out["playing"] = status.running
    out["notes"] = {"player": status.notes_player, "model": status.notes_model}
    return out


class Encoded:
    """The JSON of the latest snapshot, made once however many pages ask (the snapshot never changes).

    ``steps``: only the recent steps the page's roll shows, a quarter of the JSON to encode 20 times a
    second (the encoding holds the interpreter lock the engine thread needs at its boundaries)."""

    def __init__(self, steps: int | None = None) -> None:
        self.steps = steps
        self._status: EngineStatus | None = None
        self._data = b""

    def of(self, status: EngineStatus) -> bytes:
        if status is not self._status:
            values = status_dict(status)
            if self.steps is not None:
                values["recent"] = [entry for entry in status.recent if entry[0] > status.step - self.steps]
            self._data = json.dumps(values, separators=(",", ":")).encode()
            self._status = status
        return self._data


async def out_of_the_way(status: EngineStatus) -> None:
    """Wait while the engine is about to send a grid step (from :data:`QUIET_BEFORE` before it to
    :data:`QUIET_AFTER` after): then it needs the interpreter lock, and this thread must not hold it."""
    if status.next_boundary:
        left = status.next_boundary - time.perf_counter()
        if -QUIET_AFTER < left < QUIET_BEFORE:
            await asyncio.sleep(left + QUIET_AFTER)


def _json_error(status: int, text: str) -> Response:
    return Response(error_body(text), status_code=status, media_type="application/json")


def build(link: Link, token: str, ranges: dict[str, tuple[float, float]], recordings: Recordings,
          closing: threading.Event) -> Starlette:
    """The Starlette app (without the :class:`lofi_live.live.web.guard.Guard` around it)."""
    encoded, streamed = Encoded(), Encoded(STREAM_STEPS)
    controls, panics = Bucket(CONTROL_RATE, CONTROL_BURST), Bucket(PANIC_RATE, PANIC_BURST)
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{token}}", token)
    open_streams = 0

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def status(request: Request) -> Response:
        return Response(encoded.of(link.snapshot()), media_type="application/json")

    async def control_list(request: Request) -> Response:
        return JSONResponse({"controls": spec(ranges)})

    async def control(request: Request) -> Response:
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return _json_error(413, f"the body is over {MAX_BODY} bytes")
        body = await read_body(request.receive, MAX_BODY)
        if body is None:
            return _json_error(413, f"the body is over {MAX_BODY} bytes")
        try:
            action = action_of(json.loads(body, parse_constant=_no_constant), ranges)
        except (ValueError, RecursionError) as error:  # BadControl, bad JSON
            reason = str(error) if isinstance(error, BadControl) else "the body is not JSON"
            return _json_error(400, reason)
        if not (panics if action.kind == "panic" else controls).take():
            return _json_error(429, "too many controls: slow down")
        await out_of_the_way(link.snapshot())
        link.control(action)
        return JSONResponse({"queued": {"name": action.kind, "value": action.value}})

    async def events(request: Request) -> Response:
        if open_streams >= MAX_STREAMS:
            return _json_error(503, f"already {MAX_STREAMS} pages open")
        return StreamingResponse(_stream(), media_type="text/event-stream")

    async def _stream():
        nonlocal open_streams
        open_streams += 1
        try:
            last, quiet = None, 0.0
            while not closing.is_set():
                snapshot = link.snapshot()
                await out_of_the_way(snapshot)
                if snapshot is not last:
                    last, quiet = snapshot, 0.0
                    yield b"data: " + streamed.of(snapshot) + b"\n\n"
                elif quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield b": keep-alive\n\n"
                await asyncio.sleep(EVENT_SECONDS)
                quiet += EVENT_SECONDS
            yield b"event: closed\ndata: {}\n\n"
        finally:
            open_streams -= 1

    async def session_list(request: Request) -> Response:
        return JSONResponse({"folder": str(recordings.folder), "sessions": recordings.listing()})

    async def session_file(request: Request) -> Response:
        name, kind = request.path_params["name"], request.path_params["kind"]
        if kind not in ("mid", "png"):
            return _json_error(404, "sessions come as .mid or .png")
        try:
            path = await recordings.file(name, kind)
        except ConversionFailed as error:
            return _json_error(500, str(error))
        if path is None:
            return _json_error(404, f"no session {name[:60]!r}")
        media = "audio/midi" if kind == "mid" else "image/png"
        return FileResponse(path, media_type=media, filename=f"{name}.{kind}")

    return Starlette(routes=[
        Route("/", index),
        Route("/api/status", status),
        Route("/api/events", events),
        Route("/api/controls", control_list),
        Route("/api/control", control, methods=["POST"]),
        Route("/api/sessions", session_list),
        Route("/api/sessions/{name}.{kind}", session_file),
        Mount("/static", StaticFiles(directory=str(STATIC))),
    ])


def _no_constant(text: str) -> None:
    raise ValueError(f"{text} is not a number")
