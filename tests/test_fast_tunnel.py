"""The engine's websocket tunnels, driven without sockets: the test plays both ends.

The client's bytes after the handshake wait for the backend's 101 (a refusal must
never let them through); after it, bytes pass both ways untouched; a refusal is
answered in the relay's words, never the backend's page; shutdown says 1001 only
between frames.
"""

from __future__ import annotations

import asyncio

from jupyter_relay.errors import BackendUnreachable
from jupyter_relay.fast.tunnel import Tunnel
from jupyter_relay.routes import Road

from .fast_fakes import BACKEND_TOKEN, FakeBackend, FakeTransport, Harness, request

UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
MASKED_HELLO = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # "Hello", masked (RFC 6455)
HELLO = b"\x81\x05Hello"


async def opened(h: Harness) -> tuple[Tunnel, FakeTransport, asyncio.Protocol]:
    tunnel = h.conn.tunnel
    assert tunnel is not None
    await tunnel.task
    backend = h.relay.target
    assert backend is not None
    up, proto = backend.opened[0]
    return tunnel, up, proto


async def test_frames_wait_for_the_101_then_pass_both_ways_untouched() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/kernels/k/channels", extra=UPGRADE) + MASKED_HELLO[:4])
    tunnel, up, proto = await opened(h)
    assert up.written.startswith(b"GET /base/api/kernels/k/channels HTTP/1.1\r\n")
    assert MASKED_HELLO[:4] not in up.written  # not before the backend has agreed
    h.send(MASKED_HELLO[4:])
    proto.data_received(SWITCHED + HELLO[:3])
    assert h.transport.written.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert h.transport.written.endswith(HELLO[:3])
    assert up.written.endswith(MASKED_HELLO)  # what waited, in order
    proto.data_received(HELLO[3:])
    assert h.transport.written.endswith(HELLO)
    h.send(b"\x88\x80\x00\x00\x00\x00")  # the client's close frame: passed on as it is
    assert up.written.endswith(b"\x88\x80\x00\x00\x00\x00")
    assert not tunnel.closed
    assert h.relay.meter.websockets == {"fake": 1}
    assert h.relay.meter.requests == {}  # counted when it ends
    tunnel.close()
    assert h.relay.meter.websockets == {"fake": 0}
    assert h.relay.meter.requests == {(Road.PRIMARY, "fake", 1): 1}


async def test_a_refused_upgrade_is_answered_in_the_relays_words_and_nothing_passes() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/kernels/k/channels", extra=UPGRADE) + b"GET /smuggled HTTP/1.1\r\n\r\n")
    tunnel, up, proto = await opened(h)
    page = f"<html>login, token {BACKEND_TOKEN}</html>".encode()
    proto.data_received(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(page), page)
    )
    out = bytes(h.transport.written)
    assert out.startswith(b"HTTP/1.1 403 ")
    assert BACKEND_TOKEN.encode() not in out  # the backend's page never reaches the client
    assert b"/smuggled" not in up.written
    assert tunnel.closed and h.transport.closed
    assert h.relay.meter.requests == {(Road.PRIMARY, "fake", 4): 1}  # the relay's answer
    assert h.relay.meter.websockets == {}


async def test_shutdown_says_1001_only_between_frames() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/kernels/k/channels", extra=UPGRADE))
    tunnel, _, proto = await opened(h)
    proto.data_received(SWITCHED + HELLO[:3])  # a frame half sent
    before = len(h.transport.written)
    tunnel.going_away()
    assert len(h.transport.written) == before  # no close frame inside a frame
    assert tunnel.closed

    h2 = Harness(FakeBackend())
    h2.send(request("/api/kernels/k/channels", extra=UPGRADE))
    tunnel2, _, proto2 = await opened(h2)
    proto2.data_received(SWITCHED + HELLO)  # a whole frame
    tunnel2.going_away()
    assert h2.transport.written.endswith(b"\x88\x02\x03\xe9")  # close, 1001


async def test_the_houses_refusal_of_an_upgrade_passes_whole_until_it_closes() -> None:
    h = Harness()  # no target: the house (the gate's refusals, the Colab bridge)
    h.send(request("/http_over_websocket", token=False, extra=UPGRADE))
    tunnel = h.conn.tunnel
    assert tunnel is not None
    await tunnel.task
    up, proto = h.relay.house_backend.opened[0]
    assert bytes(up.written) == request("/http_over_websocket", token=False, extra=UPGRADE)
    refusal = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 20\r\n\r\n"
    proto.data_received(refusal + b'{"message": ')
    proto.data_received(b'"401"}  ')
    assert bytes(h.transport.written) == refusal + b'{"message": "401"}  '
    proto.connection_lost(None)
    assert tunnel.closed and h.transport.closed


async def test_a_refusal_the_backend_may_veto_is_answered_in_its_words() -> None:
    error = BackendUnreachable("fake", "the hub says the server 'fake' is not running")
    backend = FakeBackend(vetoes=lambda status, location: status == 503, veto=error)
    h = Harness(backend)
    h.send(request("/api/kernels/k/channels", extra=UPGRADE))
    tunnel, _, proto = await opened(h)
    proto.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    proto.connection_lost(None)  # the hub closes: the answer still waits for the veto
    assert h.transport.written == b"" and tunnel.vetting
    await tunnel.task
    assert backend.asked == [(503, None)]
    assert h.transport.written.startswith(b"HTTP/1.1 502 ")
    assert b"is not running" in h.transport.written
    assert tunnel.closed
