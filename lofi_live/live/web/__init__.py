"""The control surface in the browser: ``lofi-live run --web [HOST:]PORT`` (``docs/WEB.md``).

A small HTTP server on its own thread serves a page (a live piano roll, knobs, the transport, the
recorded sessions) and the API the page and scripts share. It reaches the engine only the way a
mapped CC does (:meth:`lofi_live.live.engine.Engine.control`) and reads only the engine's published
snapshots (:meth:`lofi_live.live.engine.Engine.snapshot`), so it can never hold the engine up.

It needs the ``[web]`` extra (starlette, uvicorn, matplotlib); :func:`require` says so in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lofi_live.errors import LofiError

if TYPE_CHECKING:
    from lofi_live.live.web.address import Address


def require() -> None:
    """Raise a one-line :class:`LofiError` when the ``[web]`` extra is not installed."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LofiError("--web needs the [web] extra: pip install 'lofi-live[web]'") from None


def check(text: str) -> "Address":
    """``--web``'s value, checked before anything loads: the extra installed, the address well formed."""
    from lofi_live.live.web.address import parse

    require()
    return parse(text)
