"""Request heads: parsing one (llhttp), and the head for the backend."""

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

HEAD_LIMIT = gate.HEAD_LIMIT
# CONNECT asks a proxy for a tunnel to anywhere: the relay is no such proxy.
REFUSED_METHODS = frozenset({"CONNECT"})


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
    raw: bytes = b""  # as the client sent it, for the house
    chunked: bool = False  # the body comes in chunks (Transfer-Encoding: chunked)
    http10: bool = False  # an HTTP/1.0 client: no chunked answer, no keep-alive unless asked


@dataclass(frozen=True)
class BadHead:
    """A head the relay cannot forward: the answer says why."""

    status: int
    reason: str
    message: str


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


def parse_head(data: bytes) -> Head | BadHead:
    """Parse a request head (its bytes up to and with the blank line)."""
    collector = _HeadCollector()
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    upgrade = False
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        upgrade = True
    except httptools.HttpParserError as exc:
        return BadHead(400, "Bad Request", f"the request head is not valid HTTP/1.1: {exc}")
    version = parser.get_http_version()
    if not collector.complete or version not in ("1.1", "1.0"):
        return BadHead(
            505, "HTTP Version Not Supported", "the relay speaks HTTP/1.1 (and 1.0) only"
        )
    method = parser.get_method().decode("ascii", "replace")
    if method in REFUSED_METHODS:
        return BadHead(405, "Method Not Allowed", f"the relay does not take {method} requests")
    index: dict[str, str] = {}
    for name, value in collector.headers:
        index.setdefault(name.lower(), value)
    coding = [c.strip().lower() for c in index.get("transfer-encoding", "").split(",") if c.strip()]
    chunked = coding == ["chunked"]
    if coding and not chunked:
        return BadHead(501, "Not Implemented", "a request body may only be sent chunked or whole")
    length = index.get("content-length", "0")
    if chunked and "content-length" in index:
        return BadHead(400, "Bad Request", "a request has Content-Length or is chunked, not both")
    if not length.isdigit():
        return BadHead(400, "Bad Request", f"Content-Length {length!r} is not a number")
    websocket = upgrade and method == "GET" and index.get("upgrade", "").lower() == "websocket"
    target = collector.url.decode("latin-1")
    if not target.startswith("/") or target.startswith("//"):
        return BadHead(400, "Bad Request", "the request target must be a path, as /lab")
    return Head(
        method,
        target,
        collector.headers,
        index,
        0 if chunked else int(length),
        collector.keep_alive,
        websocket,
        data,
        chunked,
        version == "1.0",
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
        client_ip=peer[0] if isinstance(peer, tuple) else "",  # none on a Unix socket
        scheme=client.server.relay.scheme,
        host=head.index.get("host", ""),
        backend_origin=up.origin,
        relay_cookie=client.server.relay.cookie_name,
        credentials=up.credentials,
    )
    lines = [f"{head.method} {target} HTTP/1.1", f"Host: {up.host_header}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    if head.chunked:
        lines.append("Transfer-Encoding: chunked")  # re-framed chunk by chunk, as it comes
    if head.websocket:
        # The handshake fields (key, version, protocols, extensions) pass as they are:
        # the backend answers the client's own handshake.
        lines.extend(("Connection: Upgrade", "Upgrade: websocket"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
