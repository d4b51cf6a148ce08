"""One client connection: its buffer, timers and routing, and the exchange or tunnel it serves."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from .. import cors, gate, routes
from ..errors import BackendError, RelayError
from ..logs import log_access
from ..responses import answer_of, error_bytes, relay_error_bytes, wire_head
from ..routes import Forward, Later, Redirect, Road
from .base import PIPELINE_LIMIT, WRITE_HIGH
from .exchange import Exchange
from .head import HEAD_LIMIT, BadHead, Head, parse_head
from .house import NAME as HOUSE
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .server import FastServer

# The `backend` of an answer no backend was chosen for (a port refused, an unknown kernel).
NO_BACKEND = "-"

log = logging.getLogger("jupyter_relay.fast")

# A whole request head must arrive within this, however it is dribbled (nginx's
# client_header_timeout); the keep-alive timer alone is re-armed by every byte.
HEAD_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 75.0


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
        self.asking: asyncio.Task[None] | None = None  # a road decided later (`Later`)
        self.resolved: Forward | None = None  # its answer, for the request it was asked for
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
            data = data[ex.take(data) :]
            if not data:
                return
        self.buffer += data
        if self.asking is not None:
            return  # the request waits for its kernel's owner; the rest, for it
        if self.exchange is None:
            self._next()
        elif len(self.buffer) > PIPELINE_LIMIT:
            self.pause("pipeline")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._stop_timers()
        if self.asking is not None:
            self.asking.cancel()
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
        """Start the next buffered request."""
        if self.transport is None or self.transport.is_closing():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if (end < 0 and len(self.buffer) > HEAD_LIMIT) or end + 4 > HEAD_LIMIT:
            self._refuse(431, "Request Header Fields Too Large", gate.head_too_large().message)
            return
        if end < 0:
            if b"\n\n" in self.buffer:
                self._refuse(400, "Bad Request", "request head lines must end with CRLF")
            elif self.buffer:
                self._arm_head()  # a head under way: it has HEAD_TIMEOUT to arrive, in all
            else:
                self._arm_idle()
            return
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        head = parse_head(bytes(self.buffer[: end + 4]))
        if isinstance(head, BadHead):
            self._refuse(head.status, head.reason, head.message)
            return
        relay = self.server.relay
        # The gate first: routing may make a port-proxy target, never for a stranger.
        # Whatever it does not pass, the house answers, with the same gate's words.
        decision = gate.decide(
            relay.policy,
            head.method,
            head.target,
            head.index,
            scheme=relay.scheme,
            websocket=head.websocket,
        )
        path, query = decision.raw_path, decision.query  # the client's bytes, split once
        if decision.outcome is gate.Outcome.PREFLIGHT:
            self._preflight(head, end, decision.headers)
            return
        if decision.outcome is not gate.Outcome.PASS:
            route: Forward | Later = relay.house
        elif self.resolved is not None:
            route, self.resolved = self.resolved, None
        else:
            route = relay.route(decision.path, path, query, head.method)
        if not isinstance(route, Forward):
            self._resolve(route, head, decision.path)  # then here again, with its answer
            return
        target = route.target
        try:
            up = target.upstream()
        except RelayError as exc:
            self._answer_error(head, path, exc, route.road, target.name)
            return
        del self.buffer[: end + 4]
        if route.path is not None:
            path = route.path
        if head.websocket:
            self.tunnel = Tunnel(self, target, up, head, path, query, route.road)
            return
        exchange = self.exchange = Exchange(self, target, up, head, path, query, route.road)
        del self.buffer[: exchange.begin(bytes(self.buffer))]

    def _resolve(self, later: Later, head: Head, path: str) -> None:
        """Await a road decided later (an owner to ask, a name to resolve, an app to start).

        Reading is paused meanwhile; the request stays buffered and is routed
        again with the answer. A `RelayError` is the answer itself. `path`: canonical.
        """
        self.pause("route")
        self.asking = self.loop.create_task(self._resolved(later, head, path))

    async def _resolved(self, later: Later, head: Head, path: str) -> None:
        try:
            found = await later()
        except RelayError as exc:
            self.asking = None
            road = routes.classify(path).road
            self._answer_error(head, head.target.partition("?")[0], exc, road, NO_BACKEND)
            return
        self.asking = None
        self.resume("route")
        if isinstance(found, Redirect):
            self._redirect(head, found, routes.classify(path).road)
            return
        self.resolved = found
        self._next()

    def cors_fields(self, head: Head) -> tuple[tuple[str, str], ...]:
        """The CORS fields for answers to this request: none unless its Origin is allowed."""
        origin = head.index.get("origin")
        if origin is None or not cors.allowed(origin, self.server.relay.policy.allow_origins):
            return ()
        return cors.answer_headers(origin)

    def _answer_error(
        self, head: Head, path: str, exc: RelayError, road: Road, backend: str
    ) -> None:
        """The relay's error answer for a request not forwarded; the connection closes."""
        if isinstance(exc, BackendError):
            log.warning("%s %s: %s", head.method, path, exc.message)
        accept = head.index.get("accept", "")
        self.buffer.clear()
        self.write(relay_error_bytes(path, head.method, accept, exc, dict(self.cors_fields(head))))
        status = answer_of(exc)[0]
        log_access(head.method, path, status, 0.0)
        self.server.relay.meter.observe(road, backend, status, None)
        self.close()

    def _preflight(self, head: Head, end: int, fields: tuple[tuple[str, str], ...]) -> None:
        """Answer an allowed origin's CORS preflight: no backend is asked."""
        keep = head.keep_alive and head.content_length == 0 and not head.chunked
        connection = ("Connection", "keep-alive" if keep else "close")
        self.write(wire_head("HTTP/1.1 204 No Content", (*fields, connection)))
        log_access(head.method, head.target.partition("?")[0], 204, 0.0)
        self.server.relay.meter.observe(Road.HOUSE, HOUSE, 204, None)
        if not keep:
            self.buffer.clear()
            self.close()
            return
        del self.buffer[: end + 4]
        self._next()

    def _redirect(self, head: Head, found: Redirect, road: Road) -> None:
        reason = "Moved Permanently" if found.status == 301 else "Found"
        fields = (
            ("Location", found.location),
            *self.cors_fields(head),
            ("Content-Length", "0"),
            ("Connection", "close"),
        )
        self.buffer.clear()
        self.write(wire_head(f"HTTP/1.1 {found.status} {reason}", fields))
        log_access(head.method, head.target.partition("?")[0], found.status, 0.0)
        self.server.relay.meter.observe(road, NO_BACKEND, found.status, None)
        self.close()

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
            message = f"the request head did not arrive within {HEAD_TIMEOUT:g} s"
            self.head_timer = self.loop.call_later(
                HEAD_TIMEOUT, self._refuse, 408, "Request Timeout", message
            )

    def _stop_timers(self) -> None:
        for timer in (self.idle_timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.head_timer = None

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer a head that cannot be read (too large, too slow, malformed), and close."""
        self.head_timer = None
        log.warning("refused a request head: %s", message)
        self.buffer.clear()
        self.write(error_bytes("/", "GET", "", status, message, reason))
        log_access("-", "-", status, 0.0)
        self.server.relay.meter.observe(Road.HOUSE, HOUSE, status, None)
        self.close()
