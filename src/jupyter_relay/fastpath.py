"""The fast path: plain HTTP requests forwarded with only their heads parsed.

Every client connection starts here. For each request the head is framed by
its blank line, parsed by llhttp (`httptools`), and checked with the same
pure functions the aiohttp path uses (token, Origin, routing, header and
path rewriting). A plain request (HTTP/1.1, a common method, no `Upgrade`,
no `Expect`, no chunked body, token valid, a backend that offers raw
connections) is written to a pooled upstream connection and the answer is
spliced back: only the response head is rewritten, body bytes pass as they
are, with backpressure both ways.

Anything else is handed to aiohttp on the same connection, from the first
byte of that request: aiohttp's protocol takes over the transport and gets
the buffered bytes. So refusals, redirects, websockets and the relay's own
endpoints keep one implementation, and this module stays small.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httptools

from . import gate
from .backends.base import Target, Upstream
from .backends.tcp import QUICKACK
from .errors import BackendError
from .forward import ClosedEarly, translate_client_error
from .headers import (
    location_base,
    page_to_scrub,
    request_headers,
    response_headers,
    strip_query_param,
    upstream_target,
)
from .responses import error_bytes, websocket_refusal
from .scrub import Scrubber

if TYPE_CHECKING:
    from .app import Relay

log = logging.getLogger("jupyter_relay.fastpath")
access_log = logging.getLogger("jupyter_relay.access")

HEAD_LIMIT = gate.HEAD_LIMIT
# A whole request head must arrive within this, however it is dribbled (nginx's
# client_header_timeout); the keep-alive timer alone is re-armed by every byte.
HEAD_TIMEOUT = 30.0
PIPELINE_LIMIT = 256 * 1024
PENDING_BODY_LIMIT = 1024 * 1024
KEEPALIVE_TIMEOUT = 75.0
POOL_SIZE = 64
MAX_POOLS = 1024
POOL_IDLE = 30.0
# Write buffer high-water mark: with asyncio's 64 KiB, a 1 GiB download paused and
# resumed the backend thousands of times a second (0.74 GB/s here); 1 MiB: 1.4 GB/s.
WRITE_HIGH = 1024 * 1024
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


class Pool:
    """Idle keep-alive connections to one backend, newest first.

    A connection idle for longer than `POOL_IDLE` is closed rather than reused:
    backends close idle connections too, and a request sent just as they do
    would be lost.
    """

    def __init__(self) -> None:
        self.idle: deque[tuple[UpstreamConnection, float]] = deque()
        self.retired = False  # dropped from the server's pools: keep nothing

    def take(self) -> UpstreamConnection | None:
        now = asyncio.get_running_loop().time()
        while self.idle:
            conn, since = self.idle.pop()
            if conn.closed:
                continue
            if now - since > POOL_IDLE:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def give(self, conn: UpstreamConnection) -> None:
        if len(self.idle) < POOL_SIZE and not conn.closed and not self.retired:
            self.idle.append((conn, asyncio.get_running_loop().time()))
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[0].close()


class FastServer:
    """The listening side: makes a `ClientConnection` per accepted connection."""

    def __init__(self, relay: Relay, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.relay = relay
        self.fallback = fallback
        self.connections: set[ClientConnection] = set()
        self.pools: dict[str, Pool] = {}
        self.server: asyncio.AbstractServer | None = None

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def pool(self, backend: str) -> Pool:
        pool = self.pools.get(backend)
        if pool is None:
            if len(self.pools) >= MAX_POOLS:
                self._retire_idle_pools()
            pool = self.pools[backend] = Pool()
        return pool

    def _retire_idle_pools(self) -> None:
        """Bound the pools (one per port-proxy prefix, too): drop those holding nothing."""
        for name, pool in list(self.pools.items()):
            if not pool.idle:
                pool.retired = True
                del self.pools[name]

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let exchanges finish within `timeout`."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.tunnel is not None:
                conn.tunnel.going_away()
            elif conn.exchange is None:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.exchange is not None for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.close()


class ClientConnection(asyncio.Protocol):
    """One client connection, while it is served by the fast path."""

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.exchange: Exchange | None = None
        self.tunnel: Tunnel | None = None
        self.paused: set[str] = set()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    # --- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.server.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        ex = self.exchange
        if ex is not None and ex.body_left:
            taken = data[: ex.body_left]
            ex.send_body(taken)
            data = data[len(taken) :]
            if not data:
                return
        self.buffer += data
        if self.exchange is None:
            self._next()
        elif len(self.buffer) > PIPELINE_LIMIT:
            self.pause("pipeline")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._stop_timers()
        if self.exchange is not None:
            self.exchange.abort()
            self.exchange = None
        if self.tunnel is not None:
            self.tunnel.close()
        self.transport = None

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_paused(True)
        elif self.tunnel is not None:
            self.tunnel.client_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_paused(False)
        elif self.tunnel is not None:
            self.tunnel.client_paused(False)

    # --- requests ---------------------------------------------------------------------

    def _next(self) -> None:
        """Start the next buffered request, or hand the connection to aiohttp."""
        if self.transport is None or self.transport.is_closing():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if (end < 0 and len(self.buffer) > HEAD_LIMIT) or end + 4 > HEAD_LIMIT:
            self._refuse(431, "Request Header Fields Too Large")
            return
        if end < 0:
            if b"\n\n" in self.buffer:
                self._handoff()  # bare line feeds: aiohttp answers those
            elif self.buffer:
                self._arm_head()  # a head under way: it has HEAD_TIMEOUT to arrive, in all
            else:
                self._arm_idle()
            return
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        head = parse_head(bytes(self.buffer[: end + 4]))
        if head is None:
            self._handoff()
            return
        relay = self.server.relay
        # The gate first: routing may make a port-proxy target, never for a stranger.
        # Whatever it does not pass, aiohttp answers, with the same gate's words.
        decision = gate.decide(
            relay.policy, head.method, head.target, head.index, websocket=head.websocket
        )
        if decision.outcome is not gate.Outcome.PASS:
            self._handoff()
            return
        path, query = decision.raw_path, decision.query  # the client's bytes, split once
        backend = relay.route(decision.path, path)
        if backend is None:
            self._handoff()
            return
        try:
            up = backend.upstream()
        except BackendError:
            self._handoff()
            return
        if up.open_raw is None:
            self._handoff()
            return
        del self.buffer[: end + 4]
        if head.websocket:
            self.tunnel = Tunnel(self, backend, up, head, path, query)
            return
        body = bytes(self.buffer[: head.content_length])
        del self.buffer[: len(body)]
        self.exchange = Exchange(self, backend, up, head, path, query)
        self.exchange.begin(body)

    def _handoff(self) -> None:
        """Give this connection, from the current request on, to aiohttp."""
        transport = self.transport
        if transport is None:
            return
        self.server.connections.discard(self)
        self._stop_timers()
        handler = self.server.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.paused:
            self.paused.clear()
            transport.resume_reading()
        if self.buffer:
            handler.data_received(bytes(self.buffer))
        self.buffer.clear()
        self.transport = None

    def finished(self, keep_alive: bool) -> None:
        self.exchange = None
        if not keep_alive:
            self.close()
            return
        self.resume("pipeline")
        self._next()

    # --- helpers ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause(self, reason: str) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and self.transport is not None:
                self.transport.resume_reading()

    def _arm_idle(self) -> None:
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(KEEPALIVE_TIMEOUT, self.close)

    def _arm_head(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(
                HEAD_TIMEOUT, self._refuse, 408, "Request Timeout"
            )

    def _stop_timers(self) -> None:
        for timer in (self.idle_timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.head_timer = None

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a head too large or too slow to read, and close: it is not parsed."""
        self.head_timer = None
        if status == 431:
            message = gate.head_too_large().message
        else:
            message = f"the request head did not arrive within {HEAD_TIMEOUT:g} s"
        log.warning("refused a request head: %s", message)
        self.buffer.clear()
        self.write(error_bytes("/", "GET", "", status, message, reason))
        self.close()


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


class Forwarding:
    """What an exchange and a tunnel share: the request, where it goes, how to refuse it."""

    def __init__(
        self,
        client: ClientConnection,
        backend: Target,
        up: Upstream,
        head: Head,
        path: str,
    ) -> None:
        self.client = client
        self.backend = backend
        self.up = up
        self.head = head
        self.path = path

    def failure(self, exc: BaseException, address: str | None = None) -> BackendError:
        """The relay's error for a failure on the way to the backend, in its own words."""
        return self.backend.explain(translate_client_error(self.backend.name, exc, address))

    def error_answer(self, error: BackendError) -> bytes:
        """The relay's error answer (JSON or an escaped page), closing the connection."""
        log.warning("%s %s: %s", self.head.method, self.path, error.message)
        return self.answer(error.status, error.message, error.reason)

    def answer(self, status: int, message: str, reason: str) -> bytes:
        accept = self.head.index.get("accept", "")
        return error_bytes(self.path, self.head.method, accept, status, message, reason)


class Exchange(Forwarding):
    """One request forwarded on the fast path, and its answer."""

    def __init__(
        self,
        client: ClientConnection,
        backend: Target,
        up: Upstream,
        head: Head,
        path: str,
        query: str,
    ) -> None:
        super().__init__(client, backend, up, head, path)
        self.started = client.loop.time()
        self.body_left = head.content_length
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.done = False
        self.task: asyncio.Future[None] | None = None
        self.retried = False
        self.request_head = upstream_head(client, up, head, path, query)

    def begin(self, body: bytes) -> None:
        self.body_left -= len(body)
        pool = self.client.server.pool(self.backend.name)
        conn = pool.take()
        if conn is not None:
            self._attach(conn, body)
            return
        if body:
            self._stash(body)
        self.task = asyncio.ensure_future(self._connect(pool))

    async def _connect(self, pool: Pool) -> None:
        assert self.up.open_raw is not None
        try:
            _, protocol = await self.up.open_raw(UpstreamConnection)
        except (OSError, TimeoutError) as exc:
            if not self.done:
                address = self.up.host_header
                self.fail(self.failure(exc, address))
            return
        conn = cast(UpstreamConnection, protocol)
        conn.pool = pool
        if self.done:
            pool.give(conn)
            return
        pending, self.pending = self.pending or [], None
        self._attach(conn, b"".join(pending))

    def _attach(self, conn: UpstreamConnection, body: bytes) -> None:
        self.pending = None
        self.conn = conn
        conn.exchange = self
        conn.write(self.request_head + body if body else self.request_head)
        if self.body_left == 0:
            self._start_clock()
        if self.client.paused & {"pending"}:
            self.client.resume("pending")

    def can_retry(self) -> bool:
        """Nothing is lost by sending again: no body, no answer yet, not retried."""
        return self.head.content_length == 0 and self.status == 0 and not self.retried

    def retry(self) -> None:
        self.retried = True
        self.conn = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending = []
        self.task = asyncio.ensure_future(self._connect(self.client.server.pool(self.backend.name)))

    def _stash(self, data: bytes) -> None:
        assert self.pending is not None
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_BODY_LIMIT:
            self.client.pause("pending")

    def send_body(self, data: bytes) -> None:
        self.body_left -= len(data)
        if self.conn is not None:
            self.conn.write(data)
            if self.body_left == 0:
                self._start_clock()
        else:
            self._stash(data)

    def _start_clock(self) -> None:
        # The backend is timed once it has the whole request, not while the client uploads.
        if self.timer is None and not self.done:
            self.timer = self.client.loop.call_later(
                self.client.server.relay.config.backend_timeout, self._timed_out
            )

    def _timed_out(self) -> None:
        self.timer = None
        if self.status == 0:
            self.fail(self.failure(TimeoutError()))

    def got_head(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def client_paused(self, paused: bool) -> None:
        if self.conn is not None and self.conn.transport is not None:
            if paused:
                self.conn.transport.pause_reading()
            else:
                self.conn.transport.resume_reading()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause("upstream")
        else:
            self.client.resume("upstream")

    def fail(self, error: BackendError) -> None:
        """Answer with the error if nothing was sent yet; close both sides."""
        sent = self.status != 0
        self._end()
        if self.conn is not None:
            self.conn.close()
        if sent:
            log.warning("%s %s: %s", self.head.method, self.path, error.message)
        else:
            self.client.write(self.error_answer(error))
            self._log(error.status)
        self.client.finished(keep_alive=False)

    def complete(self, upstream_reusable: bool, client_keep_alive: bool) -> None:
        conn = self.conn
        self._end()
        if conn is not None:
            conn.exchange = None
            if upstream_reusable and self.body_left == 0 and conn.pool is not None:
                conn.pool.give(conn)
            else:
                conn.close()
        self._log(self.status)
        keep_alive = client_keep_alive and self.head.keep_alive and self.body_left == 0
        self.client.finished(keep_alive=keep_alive)

    def abort(self) -> None:
        """The client went away: drop the upstream connection, whose answer is unread."""
        self._end()
        if self.conn is not None:
            self.conn.exchange = None
            self.conn.close()

    def _end(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _log(self, status: int) -> None:
        if access_log.isEnabledFor(logging.DEBUG):
            elapsed = (self.client.loop.time() - self.started) * 1000
            access_log.debug("%s %s %d %.1fms (fast)", self.head.method, self.path, status, elapsed)


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to a backend; its answers are parsed as they arrive.

    The head is rewritten and sent once llhttp has parsed it; body bytes go on
    as llhttp hands them over (re-framed as chunks when the backend chunked
    them). The exchange is finished after `feed_data` returns, so nothing
    re-enters the parser.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.pool: Pool | None = None
        self.closed = False
        self.reused = False
        self.parser = httptools.HttpResponseParser(self)
        self.on_message_begin()
        self.message_done = False
        self.reusable = False

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.reason = b""
        self.head_sent = False
        self.informational = False
        self.chunked = False
        self.close_delimited = False
        self.scrubber: Scrubber | None = None

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            # Informational (103 Early Hints): pass it on, then read the real answer.
            self.informational = True
            ex.client.write(self._head_bytes(status, self.headers))
            return
        ex.status = status
        ex.got_head()
        out = response_headers(
            self.headers,
            backend_origins=ex.up.origins,
            relay_is_https=False,
            location_prefix=ex.up.location_prefix if 300 <= status < 400 else "",
            relay_cookie=ex.client.server.relay.cookie_name,
            cookie_scope=ex.up.cookie_scope,
            cookie_relative=bool(ex.up.strip_prefix),
            base_path=location_base(ex.path, ex.up.base_url.raw_path),
        )
        lower = {k.lower(): v for k, v in self.headers}
        self.chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        no_body = status in (204, 304)
        self.close_delimited = not (self.chunked or "content-length" in lower or no_body)
        if (
            ex.up.secrets
            and page_to_scrub(lower.get("content-type", ""), lower.get("content-encoding"))
            and not no_body
        ):
            # A page the backend may have printed its token into streams through a
            # Scrubber; its length changes, so it goes chunked (or to the close).
            self.scrubber = Scrubber(ex.up.secrets)
            out.popall("Content-Length", None)
            self.chunked = not self.close_delimited
        if self.chunked:
            out["Transfer-Encoding"] = "chunked"
        if self.close_delimited or not ex.head.keep_alive:
            out["Connection"] = "close"
        ex.client.write(self._head_bytes(status, out.items()))
        self.head_sent = True

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        if self.scrubber is not None:
            body = self.scrubber.feed(bytes(body))
            if not body:
                return
        if self.chunked:
            ex.client.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            ex.client.write(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        ex = self.exchange
        if ex is None:
            return
        if self.chunked:
            tail = self.scrubber.flush() if self.scrubber is not None else b""
            if tail:
                ex.client.write(b"%x\r\n%s\r\n" % (len(tail), tail))
            ex.client.write(b"0\r\n\r\n")
        self.head_sent = True
        self.message_done = True
        # llhttp forgets the message once this callback returns: ask now.
        self.reusable = self.parser.should_keep_alive()

    # --- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(False)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # an answer nobody asked for: this connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            error = ConnectionError(f"backend '{ex.backend.name}' sent a malformed answer ({exc})")
            ex.fail(ex.failure(error))
            return
        if self.message_done:
            self.message_done = False
            self.on_message_begin()  # nothing of this answer is pending any more
            ex.complete(
                upstream_reusable=self.reusable,
                client_keep_alive=not self.close_delimited,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        ex, self.exchange = self.exchange, None
        if ex is None or ex.done:
            return
        if not self.head_sent and self.reused and ex.can_retry():
            ex.retry()  # a kept-alive connection the backend had just closed: try a fresh one
        elif not self.head_sent:
            ex.fail(ex.failure(ClosedEarly()))
        elif self.close_delimited:
            if self.scrubber is not None:
                ex.client.write(self.scrubber.flush())
            ex.complete(upstream_reusable=False, client_keep_alive=False)
        else:
            # Cut short mid-body: close the client's connection so it sees the truncation.
            ex.abort()
            ex.client.finished(keep_alive=False)

    def _head_bytes(self, status: int, headers: Any) -> bytes:
        reason = self.reason.decode("latin-1") or "OK"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend(f"{k}: {v}" for k, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --- websockets --------------------------------------------------------------------------

WS_GOING_AWAY = b"\x88\x02\x03\xe9"  # a server's close frame, code 1001, unmasked


class FrameCursor:
    """Follows websocket frame boundaries in a byte stream, without copying payloads.

    A close frame may only be injected between frames; this says when that is.
    """

    __slots__ = ("left", "partial")

    def __init__(self) -> None:
        self.left = 0
        self.partial = b""

    def feed(self, data: bytes) -> None:
        if self.partial:
            data = self.partial + data
            self.partial = b""
        pos, end = 0, len(data)
        while True:
            if self.left:
                step = min(self.left, end - pos)
                pos += step
                self.left -= step
                if self.left:
                    return
            if pos >= end:
                return
            if end - pos < 2:
                self.partial = data[pos:]
                return
            second = data[pos + 1]
            length = second & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            size += 4 if second & 0x80 else 0
            if end - pos < size:
                self.partial = data[pos:]
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            pos += size
            self.left = length

    @property
    def at_boundary(self) -> bool:
        return self.left == 0 and not self.partial


class Tunnel(Forwarding):
    """A websocket: the handshake forwarded, then bytes spliced both ways, frames untouched.

    The backend chooses among the subprotocols the client offered and answers the
    client's own key; frame types, pings and close codes pass as they are.
    """

    def __init__(
        self,
        client: ClientConnection,
        backend: Target,
        up: Upstream,
        head: Head,
        path: str,
        query: str,
    ) -> None:
        super().__init__(client, backend, up, head, path)
        self.upstream: TunnelUpstream | None = None
        self.stash: list[bytes] = [bytes(client.buffer)] if client.buffer else []
        client.buffer.clear()
        self.cursor = FrameCursor()
        self.closed = False
        request = upstream_head(client, up, head, path, query)
        self.task = asyncio.ensure_future(self._open(request))

    async def _open(self, request: bytes) -> None:
        assert self.up.open_raw is not None
        try:
            _, protocol = await self.up.open_raw(lambda: TunnelUpstream(self))
        except (OSError, TimeoutError) as exc:
            error = self.failure(exc, self.up.host_header)
            self.client.write(self.error_answer(error))
            self.close()
            return
        upstream = cast(TunnelUpstream, protocol)
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        upstream.write(request)

    def from_client(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.upgraded:
            self.upstream.write(data)
        else:
            # Until the backend's 101, nothing after the handshake is the backend's: if it
            # refuses, these bytes (a pipelined request, say) were never let through the gate.
            self.stash.append(data)
            if sum(map(len, self.stash)) > PIPELINE_LIMIT:
                self.client.pause("upgrade")

    def upgraded(self) -> None:
        """The backend said 101: what the client sent meanwhile is websocket frames."""
        assert self.upstream is not None
        if self.stash:
            self.upstream.write(b"".join(self.stash))
            self.stash = []
        self.client.resume("upgrade")

    def to_client(self, data: bytes) -> None:
        cursor = self.cursor
        n = len(data)
        # Most reads are one whole small frame (unmasked, length < 126): see that cheaply.
        if cursor.left or cursor.partial or n < 2 or data[1] > 125 or n != 2 + data[1]:
            cursor.feed(data)
        self.client.write(data)

    def client_paused(self, paused: bool) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if paused:
                upstream.transport.pause_reading()
            else:
                upstream.transport.resume_reading()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause("upstream")
        else:
            self.client.resume("upstream")

    def going_away(self) -> None:
        """Shutdown: tell the client with 1001 (between frames), close both sides."""
        if self.upstream is not None and self.upstream.upgraded and self.cursor.at_boundary:
            self.client.write(WS_GOING_AWAY)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.upstream is not None:
            self.upstream.close()
        self.client.tunnel = None
        self.client.close()
        if access_log.isEnabledFor(logging.DEBUG):
            status = self.upstream.status if self.upstream is not None else 0
            access_log.debug("GET %s %d websocket closed (fast)", self.path, status)


class TunnelUpstream(asyncio.Protocol):
    """The backend side of a tunnel: reads the handshake answer, then splices."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.reason = b""
        self.status = 0
        self.upgraded = False
        self.refused = False
        self.rearm: Callable[[], None] | None = None

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        sock = transport.get_extra_info("socket")
        if QUICKACK is not None and sock is not None:
            self.rearm = functools.partial(sock.setsockopt, socket.IPPROTO_TCP, QUICKACK, 1)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.tunnel.upstream_paused(True)

    def resume_writing(self) -> None:
        self.tunnel.upstream_paused(False)

    def data_received(self, data: bytes) -> None:
        if self.rearm is not None:
            # Kernel websockets: jupyter_server leaves Nagle on; acknowledge at once.
            try:
                self.rearm()
            except OSError:
                self.rearm = None
        if self.upgraded:
            self.tunnel.to_client(data)
            return
        if self.refused:
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > HEAD_LIMIT:
                self.tunnel.close()
            return
        self._feed(bytes(self.head[: end + 4]))
        rest = bytes(self.head[end + 4 :])
        self.head = bytearray()
        self.status = self.parser.get_status_code()
        tunnel = self.tunnel
        if self.status != 101:
            # Refused (unknown kernel, auth, a page): the relay says so in its own words, as
            # for any refused upgrade; the backend's answer may hold its token. Then close.
            self.refused = True
            status, message, reason = websocket_refusal(tunnel.backend.name, self.status)
            tunnel.client.write(tunnel.answer(status, message, reason))
            tunnel.close()
            return
        up = tunnel.up
        out = response_headers(
            self.headers,
            backend_origins=up.origins,
            relay_is_https=False,
            relay_cookie=tunnel.client.server.relay.cookie_name,
            cookie_scope=up.cookie_scope,
            cookie_relative=bool(up.strip_prefix),
            base_path=location_base(self.tunnel.path, up.base_url.raw_path),
        )
        self.upgraded = True
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
        lines = [f"HTTP/1.1 {self.status} {self.reason.decode('latin-1')}"]
        lines.extend(f"{k}: {v}" for k, v in out.items())
        tunnel.client.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        tunnel.upgraded()
        if rest:
            tunnel.to_client(rest)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the 101 head ends here; what follows are frames
        except httptools.HttpParserError:
            self.tunnel.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.upgraded and not self.refused and not self.tunnel.closed:
            # Closed before answering the handshake: the client has had nothing yet.
            self.tunnel.client.write(self.tunnel.error_answer(self.tunnel.failure(ClosedEarly())))
        self.tunnel.close()
