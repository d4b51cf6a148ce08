"""The port proxy's URL forms, read strictly from the raw path.

jupyter-server-proxy's four forms, plus the relay's named apps:

    /proxy/<port>/<path>                    relative: the app sees /<path>
    /proxy/absolute/<port>/<path>           absolute: the app sees the whole path
    /proxy/<host>:<port>/<path>             another host (allowlist), or a backend's machine
    /proxy/absolute/<host>:<port>/<path>
    /apps/<name>/<path>                     a named app the relay starts

Parsing works on the raw (still percent-encoded) path, so `%2F`, `%40` or
`%23` can never change where a request goes: a host is `[A-Za-z0-9.-]+` or a
bracketed IPv6 literal, a port is 1-65535 without leading zeros, and what
follows the port is empty or starts with `/`. Anything else is not a proxy
path at all (404), and nothing is contacted. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

PROXY = "/proxy/"
APPS = "/apps/"
# Where the app's part of the path begins: after the port, "" or "/...".
_FORM = re.compile(
    r"/proxy/(?P<absolute>absolute/)?"
    r"(?:(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):)?"
    r"(?P<port>[1-9][0-9]{0,4})"
    r"(?P<rest>/.*)?"
)
_APP = re.compile(r"/apps/(?P<name>[a-z][a-z0-9_-]*)(?P<rest>/.*)?")
APP_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# Backend names may hold `_`, which host names may not; see `ProxyPath.host`.
_HOST_NAME = re.compile(r"[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class ProxyPath:
    """Where a `/proxy/...` request goes, and how the app sees it."""

    host: str | None  # None: the port form, this machine; else a name, IP literal or backend
    port: int
    absolute: bool
    prefix: str  # /proxy/[absolute/][<host>:]<port>, as the client wrote it

    @property
    def is_ip(self) -> bool:
        return self.host is not None and ip_literal(self.host) is not None


def parse_proxy(raw_path: str, backend_names: frozenset[str] = frozenset()) -> ProxyPath | None:
    """Read a raw relay path (no query) as a port-proxy form; None when it is not one.

    A host with `_` is taken only when it names a backend (backend names may
    hold `_`, host names may not).
    """
    match = _FORM.fullmatch(raw_path)
    if match is None:
        return None
    port = int(match["port"])
    if port > 65535:
        return None
    host = match["host"]
    if host is not None:
        if host.startswith("["):
            if ip_literal(host) is None:
                return None
        elif host not in backend_names and not valid_host_name(host):
            return None
    rest = match["rest"] or ""
    prefix = raw_path[: len(raw_path) - len(rest)]
    return ProxyPath(host=host, port=port, absolute=bool(match["absolute"]), prefix=prefix)


def valid_host_name(host: str) -> bool:
    """A DNS name or a canonical IPv4 address; not the numeric forms libc also reads.

    `127.1`, `2130706433` or `0x7f.1` would reach 127.0.0.1 through getaddrinfo
    while looking like names: refused, so that what the allowlist sees is what
    is dialled.
    """
    if not _HOST_NAME.fullmatch(host) or host.startswith((".", "-")) or ".." in host:
        return False
    if ip_literal(host) is not None:
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return True
    return False


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally (`10.0.0.1`, `[::1]`), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host.startswith("[") != host.endswith("]") or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and not host.startswith("["):
        return None  # IPv6 only in brackets, as in URLs
    return address


@dataclass(frozen=True)
class AppPath:
    name: str
    prefix: str  # /apps/<name>
    bare: bool  # /apps/<name> with no slash: redirect to the slash


def parse_app(raw_path: str) -> AppPath | None:
    match = _APP.fullmatch(raw_path)
    if match is None:
        return None
    name = match["name"]
    return AppPath(name=name, prefix=f"/apps/{name}", bare=match["rest"] is None)


def context_headers(prefix: str) -> tuple[tuple[str, str], ...]:
    """What a relative-mode app is told about the prefix the relay took off.

    `X-Forwarded-Prefix` is what werkzeug/Flask, Dash and most frameworks read;
    the other two are jupyter-server-proxy's, kept for apps that read those, and
    spelled as it sends them (tornado normalises the name to `X-Proxycontextpath`
    on the wire; its own tests compare the header as the app received it).
    """
    return (
        ("X-Forwarded-Prefix", prefix),
        ("X-Forwarded-Context", prefix),
        ("X-Proxycontextpath", prefix),
    )
