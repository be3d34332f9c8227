"""``--web [HOST:]PORT``: where the control surface listens, and whether that is this machine only."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from lofi_live.errors import LofiError

#: The host when ``--web`` names only a port: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: Names that mean "this machine" in a ``Host`` or ``Origin`` header, beside the bound address.
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Address:
    host: str  # as given (an IP address or a name), never a wildcard
    port: int  # 0: a free port, chosen when the socket is bound
    explicit_host: bool

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(text: str) -> Address:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; a one-line :class:`LofiError` for anything else."""
    where = f"--web {text}"
    host, explicit = DEFAULT_HOST, False
    port_text = text.strip()
    if port_text.startswith("["):
        inside, bracket, rest = port_text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise LofiError(f"{where}: write an IPv6 host as [ADDRESS]:PORT")
        host, explicit, port_text = inside, True, rest[1:]
    elif ":" in port_text:
        host, _, port_text = port_text.rpartition(":")
        explicit = True
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise LofiError(f"{where}: PORT must be a number 0..65535 (0: any free port)")
    if explicit and not host:
        raise LofiError(f"{where}: HOST is empty (give PORT alone for {DEFAULT_HOST})")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise LofiError(f"{where}: {host} would listen on every network; give the one address to serve "
                            "(e.g. this machine's LAN address), so requests for any other host name can be refused")
    except ValueError:
        pass  # a name, resolved when the socket is bound
    return Address(host, int(port_text), explicit)


def bind(address: Address) -> socket.socket:
    """A listening TCP socket on ``address`` (a one-line error when the port is taken or the host unknown)."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise LofiError(f"--web: cannot resolve host {address.host!r} ({error.strerror or error})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(64)
    except OSError as error:
        sock.close()
        raise LofiError(f"--web: cannot listen on {address.host}:{address.port} ({error.strerror or error})") from None
    sock.setblocking(False)
    return sock


def url_host(host: str) -> str:
    """``host`` as written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
