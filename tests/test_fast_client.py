"""The engine's client connection, driven byte by byte without sockets.

With the fakes of `fast_fakes`: a relay that routes every request to the house
(aiohttp's place, a fake backend whose heads pass verbatim) unless a test gives
it a target, and a kernel's websocket to its owner once the fake mixer says who.
What is checked is the connection's own state machine: framing, forwarding to
the house request by request, refusals of heads it cannot read, and waiting for
a road with reading paused.
"""

from __future__ import annotations

import pytest

from jupyter_relay.errors import NotFound
from jupyter_relay.fast.head import HEAD_LIMIT

from .fast_fakes import KERNEL, ORIGIN, FakeBackend, Harness, request

UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def settle(h: Harness) -> None:
    """Let the exchange open its upstream connection (a task), if it had to."""
    exchange = h.conn.exchange
    if exchange is not None and exchange.task is not None:
        await exchange.task


async def test_a_head_in_pieces_goes_to_the_house_once_whole_and_verbatim() -> None:
    h = Harness()
    data = request(token=False)  # refused by the gate: the house says so
    for i in range(len(data) - 1):
        h.send(data[i : i + 1])
        assert h.conn.exchange is None  # nothing decided before the blank line
    h.send(data[-1:])
    await settle(h)
    assert h.handed == data  # as the client sent it: the house runs the gate again
    assert h.transport.written == b""  # the house answers, not the engine


async def test_the_connection_stays_the_engines_after_a_house_answer() -> None:
    target = FakeBackend()
    h = Harness()
    h.send(request("/relay/api/status") + request("/api/contents"))
    await settle(h)
    assert h.handed == request("/relay/api/status")  # the second waits for the first
    _, house = h.relay.house_backend.opened[0]
    h.relay.target = target  # the second request's road: a backend
    house.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    await settle(h)
    assert h.transport.written.endswith(b"\r\n\r\n{}")
    up, _ = target.opened[0]
    assert up.written.startswith(b"GET /base/api/contents HTTP/1.1\r\n")


async def test_a_head_over_the_limit_is_431_and_closed() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT)
    assert h.transport.written.startswith(b"HTTP/1.1 431 ")
    assert h.transport.closed
    assert h.relay.house_backend.opened == []


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\nHost: h\n\n", b"400"),  # bare line feeds
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", b"505"),
        (b"CONNECT example.org:443 HTTP/1.1\r\nHost: h\r\n\r\n", b"405"),
        (b"GET http://example.org/ HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),  # not a path
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", b"400"),  # llhttp
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"400",
        ),
    ],
)
async def test_a_head_the_engine_cannot_forward_is_refused_and_closed(
    data: bytes, status: bytes
) -> None:
    h = Harness(FakeBackend())
    h.send(data)
    assert h.transport.written.startswith(b"HTTP/1.1 " + status + b" ")
    assert b'"message"' in h.transport.written  # Jupyter's JSON error shape
    assert h.transport.closed
    assert h.relay.house_backend.opened == [] and h.relay.target is not None
    assert h.relay.target.opened == []


@pytest.mark.parametrize("found", [False, True])
async def test_a_kernel_websocket_waits_for_its_owner_with_reading_paused(found: bool) -> None:
    h = Harness()
    head = request(f"/api/kernels/{KERNEL}/channels", extra=UPGRADE)
    h.send(head)
    assert h.conn.asking is not None  # the mixer is being asked
    assert not h.transport.reading
    h.send(b"early bytes")  # already in flight: kept, in order
    if found:
        h.relay.mixer.kernel_owner[KERNEL] = "b"  # as kernel_owner_of leaves it
        h.relay.mixer.answer.set_result("b")
    else:
        h.relay.mixer.answer.set_exception(NotFound(f"Kernel does not exist: {KERNEL}"))
    assert h.conn.asking is not None
    await h.conn.asking
    assert h.relay.mixer.asked == [KERNEL]  # once
    if not found:
        assert h.transport.written.startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert b"Kernel does not exist" in h.transport.written
        assert h.transport.closed
        return
    assert h.transport.reading
    tunnel = h.conn.tunnel
    assert tunnel is not None
    await tunnel.task
    owner = h.relay.owners["b"]
    up, _ = owner.opened[0]
    assert up.written.startswith(f"GET /base/api/kernels/{KERNEL}/channels HTTP/1.1\r\n".encode())
    assert b"early bytes" not in up.written  # held until the backend's 101
    assert tunnel.stash == [b"early bytes"]


async def test_a_road_decided_later_that_fails_answers_in_the_relays_words() -> None:
    h = Harness()

    async def refused() -> None:
        raise NotFound("no port-proxy target here")

    h.relay.route = lambda path, raw, query, method: refused  # type: ignore[assignment,method-assign,return-value]
    h.send(request("/proxy/1/", extra="Accept: text/html\r\n"))
    assert h.conn.asking is not None
    await h.conn.asking
    assert h.transport.written.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"<p>no port-proxy target here</p>" in h.transport.written
    assert h.transport.closed


async def test_an_allowed_origins_preflight_is_answered_here_and_the_connection_goes_on() -> None:
    target = FakeBackend()
    h = Harness(target)
    asked = (
        f"OPTIONS /api/sessions?token=x HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nOrigin: {ORIGIN}\r\n"
        "Access-Control-Request-Method: POST\r\n"
        "Access-Control-Request-Headers: content-type\r\n\r\n"
    ).encode()
    h.send(asked + request("/api/status"))
    out = bytes(h.transport.written)
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert f"Access-Control-Allow-Origin: {ORIGIN}".encode() in out
    assert b"Access-Control-Allow-Methods: " in out
    await settle(h)
    up, _ = target.opened[0]  # the next request went to the backend; the preflight did not
    assert up.written.count(b" HTTP/1.1\r\n") == 1
    assert up.written.startswith(b"GET /base/api/status HTTP/1.1\r\n")
    assert not h.transport.closed
