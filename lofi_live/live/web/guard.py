"""Who may use the control surface: the token, the served origin, body sizes and the control rate.

The surface is a network service that can make a live instrument play, so every request passes
:class:`Guard` before any route sees it (the threat model is in ``docs/WEB.md``):

* a ``Host`` header that is not the served host and port is refused with 403: a page from another site
  whose name was re-pointed at this machine (DNS rebinding) names its own host there;
* an ``Origin`` header (browsers send it with every POST and cross-site fetch) that is not the served
  origin is refused with 403, and so is ``Sec-Fetch-Site: cross-site``: a page elsewhere cannot drive
  the instrument (CSRF), nor read its answers;
* without the run's token (``?token=`` or ``Authorization: Bearer``, compared in constant time) the
  answer is 401;
* every answer forbids framing, sniffing, caching and referrers (the token is in the page's URL).

:class:`Bucket` limits the control rate, so a flood of requests cannot crowd the engine's input.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

#: The run's token: 32 random bytes (256 bits), URL-safe.
TOKEN_BYTES = 32
#: Headers on every answer.
SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def error_body(text: str) -> bytes:
    """The one-line JSON error every refusal answers with."""
    return json.dumps({"error": text}).encode() + b"\n"


async def refuse(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": error_body(text)})


class Guard:
    """ASGI middleware: the origin checks, then the token, then the app (with the security headers)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str, hosts: Iterable[str],
                 scheme: str = "http", wait: Callable[[], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.wait = wait  # awaited first by every request: the engine's moments are not the server's
        self.token = token.encode()
        self.hosts = frozenset(host.lower() for host in hosts)
        self.origins = frozenset(f"{scheme}://{host}" for host in self.hosts)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, reason)`` when the request may not pass, else None."""
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            return 403, "forbidden: the Host header is not this surface's (DNS rebinding?)"
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").lower() not in self.origins:
            return 403, "forbidden: request from a foreign origin"
        if headers.get(b"sec-fetch-site") == b"cross-site":
            return 403, "forbidden: cross-site request"
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[-1].encode()
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            given = authorization[7:].strip()
        if not hmac.compare_digest(given, self.token):
            return 401, "unauthorized: the token is missing or wrong (use the URL lofi-live printed)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no WebSocket is served; lifespan is off
            return
        if self.wait is not None:
            await self.wait()
        refused = self.refusal(scope)
        if refused is not None:
            await refuse(send, *refused)
            return

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", ()), *SECURITY_HEADERS])
            await send(message)

        await self.app(scope, receive, secured)


class Bucket:
    """A token bucket: ``rate`` events a second on average, up to ``burst`` at once (event-loop thread only)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.level = burst
        self.when = clock()

    def take(self) -> bool:
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.when) * self.rate)
        self.when = now
        if self.level < 1:
            return False
        self.level -= 1
        return True


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes ``limit`` bytes (the rest is never buffered)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body
