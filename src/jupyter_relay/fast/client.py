"""One client connection: its buffer, its timers, and the exchange or tunnel it serves."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from .. import gate
from ..errors import BackendError, RelayError
from ..responses import error_bytes
from .base import PIPELINE_LIMIT, WRITE_HIGH
from .exchange import Exchange
from .head import HEAD_LIMIT, parse_head
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .server import FastServer

log = logging.getLogger("jupyter_relay.fast")
access_log = logging.getLogger("jupyter_relay.access")

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
        self.asking: asyncio.Task[None] | None = None  # the mixer, for a kernel's owner
        self.asked_owner: str | None = None
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
            kernel = relay.unknown_kernel(decision.path) if head.websocket else None
            if kernel is not None and kernel != self.asked_owner:
                self._ask_owner(kernel)  # then here again, the owner known
            else:
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

    def _ask_owner(self, kernel: str) -> None:
        """Find which backend runs `kernel`, with reading paused, then route the request again.

        Whatever the mixer cannot find (an unknown kernel, no backend answering),
        aiohttp answers, in the mixer's words.
        """
        self.asked_owner = kernel
        self.pause("owner")
        self.asking = self.loop.create_task(self._owner_known(kernel))

    async def _owner_known(self, kernel: str) -> None:
        try:
            await self.server.relay.mixer.kernel_owner_of(kernel)
        except RelayError as exc:
            log.debug("the owner of kernel %s: %s", kernel, exc)
        self.asking = None
        self.resume("owner")
        self._next()

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
