"""Request heads on the fast path: framing and parsing one, and the head for the backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from .. import gate
from ..backends.base import Upstream
from ..headers import (
    request_headers,
    strip_query_param,
    upstream_target,
)

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("jupyter_relay.fast")
access_log = logging.getLogger("jupyter_relay.access")

HEAD_LIMIT = gate.HEAD_LIMIT
FAST_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HANDS_OFF = frozenset({"expect", "transfer-encoding"})


@dataclass(frozen=True)
class Head:
    """A parsed request head."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    index: dict[str, str]  # lower-case name -> first value
    content_length: int
    keep_alive: bool
    websocket: bool = False


class _HeadCollector:
    """httptools callbacks that keep the target and the header fields."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.complete = False
        self.keep_alive = False
        self.parser: Any = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.complete = True
        # llhttp forgets a message without body once it completes: ask now.
        self.keep_alive = self.parser.should_keep_alive()


def parse_head(data: bytes) -> Head | None:
    """Parse a request head; None for anything the fast path does not take."""
    collector = _HeadCollector()
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    upgrade = False
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        upgrade = True
    except httptools.HttpParserError:
        return None
    if not collector.complete or parser.get_http_version() != "1.1":
        return None
    method = parser.get_method().decode("ascii", "replace")
    if method not in FAST_METHODS:
        return None
    index: dict[str, str] = {}
    for name, value in collector.headers:
        index.setdefault(name.lower(), value)
    if HANDS_OFF & index.keys():
        return None
    websocket = upgrade and method == "GET" and index.get("upgrade", "").lower() == "websocket"
    if "upgrade" in index and not websocket:
        return None
    length = index.get("content-length", "0")
    if not length.isdigit():
        return None
    target = collector.url.decode("latin-1")
    if not target.startswith("/") or target.startswith("//"):
        return None
    return Head(
        method, target, collector.headers, index, int(length), collector.keep_alive, websocket
    )


def upstream_head(
    client: ClientConnection, up: Upstream, head: Head, path: str, query: str
) -> bytes:
    """The request head for the backend: path mapped, relay token and credentials swapped."""
    query = strip_query_param(query, "token")
    target = upstream_target(path, up.base_url.raw_path, up.strip_prefix)
    target += "?" + query if query else ""
    transport = client.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    headers = request_headers(
        head.headers,
        client_ip=peer[0] if peer else "",
        scheme="http",
        host=head.index.get("host", ""),
        backend_origin=up.origin,
        relay_cookie=client.server.relay.cookie_name,
        credentials=up.credentials,
    )
    lines = [f"{head.method} {target} HTTP/1.1", f"Host: {up.host_header}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    if head.websocket:
        # The handshake fields (key, version, protocols, extensions) pass as they are:
        # the backend answers the client's own handshake.
        lines.extend(("Connection: Upgrade", "Upgrade: websocket"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
