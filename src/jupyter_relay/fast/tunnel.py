"""A websocket on the fast path: the handshake checked, then bytes both ways."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from ..backends.base import Target, Upstream
from ..backends.tcp import QUICKACK
from ..headers import (
    location_base,
    response_headers,
)
from ..logs import access_level, access_log
from ..responses import websocket_refusal, wire_head
from ..routes import Road
from ..translate import ClosedEarly
from .base import PIPELINE_LIMIT, WRITE_HIGH, Forwarding
from .head import HEAD_LIMIT, Head

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("jupyter_relay.fast")

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
        road: Road,
    ) -> None:
        super().__init__(client, backend, up, head, path, query, road)
        self.upstream: TunnelUpstream | None = None
        self.stash: list[bytes] = [bytes(client.buffer)] if client.buffer else []
        client.buffer.clear()
        self.cursor = FrameCursor()
        self.closed = False
        self.open = False  # upgraded: counted among the open websockets
        self.vetting = False  # a refusal is shown to the backend (`Upstream.vetoes`)
        self.task: asyncio.Future[None] = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
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
        upstream.write(self.request_head)

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
        self.meter.websocket(self.backend.name, 1)
        self.open = True
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

    def refused(self, status: int) -> None:
        """The backend refused the upgrade: say so in the relay's words, then close."""
        status, message, reason = websocket_refusal(self.backend.name, status)
        self.client.write(self.answer(status, message, reason))
        self.close()

    async def vet(self, status: int, location: str | None) -> None:
        """A refusal the backend may veto (a hub whose server is gone): ask, then answer."""
        error = await self.veto(status, location)
        if self.closed:
            return
        if error is not None:
            self.client.write(self.error_answer(error))
            self.close()
        else:
            self.refused(status)

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
        upstream_status = self.upstream.status if self.upstream is not None else 0
        if self.open:
            self.meter.websocket(self.backend.name, -1)
        # The relay's own answer if it wrote one (a refusal in its words), else the backend's.
        status = self.answered or upstream_status
        self.meter.observe(self.road, self.backend.name, status, None)
        level = access_level(status) if status else logging.INFO
        if access_log.isEnabledFor(level):
            path = self.path.partition("?")[0]
            access_log.log(level, "GET %s %d websocket closed", path, status)


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
        self.passing = False  # a refusal of the house's, passed on until it closes
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
        if self.passing:
            self.tunnel.client.write(data)
            return
        if self.refused:
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > HEAD_LIMIT:
                self.tunnel.close()
            return
        head = bytes(self.head[: end + 4])
        self._feed(head)
        rest = bytes(self.head[end + 4 :])
        self.head = bytearray()
        self.status = self.parser.get_status_code()
        tunnel = self.tunnel
        if self.status != 101:
            self.refused = True
            if tunnel.up.verbatim:
                # The relay's own refusal (the house closes after it): passed on whole.
                self.passing = True
                tunnel.client.write(head + rest)
                return
            # Refused (unknown kernel, auth, a page): the relay says so in its own words, as
            # for any refused upgrade; the backend's answer may hold its token. Then close.
            location = next((v for k, v in self.headers if k.lower() == "location"), None)
            vetoes = tunnel.up.vetoes
            if vetoes is not None and vetoes(self.status, location):
                tunnel.vetting = True
                tunnel.task = asyncio.ensure_future(tunnel.vet(self.status, location))
            else:
                tunnel.refused(self.status)
            return
        self.upgraded = True
        if tunnel.up.verbatim:
            tunnel.client.write(head)
            tunnel.upgraded()
            if rest:
                tunnel.to_client(rest)
            return
        up = tunnel.up
        out = response_headers(
            self.headers,
            backend_origins=up.origins,
            relay_is_https=tunnel.client.server.relay.scheme == "https",
            relay_cookie=tunnel.client.server.relay.cookie_name,
            cookie_scope=up.cookie_scope,
            cookie_relative=bool(up.strip_prefix),
            base_path=location_base(self.tunnel.path, up.base_url.raw_path),
        )
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
        status_line = f"HTTP/1.1 {self.status} {self.reason.decode('latin-1')}"
        tunnel.client.write(wire_head(status_line, out.items()))
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
        if self.tunnel.vetting:
            return  # the answer waits for the backend's word; `vet` closes
        if not self.upgraded and not self.refused and not self.tunnel.closed:
            # Closed before answering the handshake: the client has had nothing yet.
            early = exc if isinstance(exc, ConnectionRefusedError) else ClosedEarly()
            self.tunnel.client.write(self.tunnel.error_answer(self.tunnel.failure(early)))
        self.tunnel.close()
