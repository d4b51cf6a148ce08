"""The fast path's exchanges, driven without sockets: the test plays client and backend.

With the fakes of `fast_fakes`, every request is routed to a fake backend whose raw
connections are fake transports: what the relay sends upstream is read from one,
and the backend's answer is fed, in whatever pieces, to the upstream protocol.
"""

from __future__ import annotations

import asyncio
from typing import cast

from jupyter_relay.fast.exchange import Exchange

from .fast_fakes import BACKEND_TOKEN, TOKEN, FakeBackend, FakeTransport, Harness, request


async def upstream_of(h: Harness, index: int = 0) -> tuple[FakeTransport, asyncio.Protocol]:
    """The `index`th raw connection the relay opened, once the exchange has opened it."""
    exchange = h.conn.exchange
    if exchange is not None and exchange.task is not None:
        await exchange.task
    backend = h.relay.target
    assert backend is not None
    return backend.opened[index]


def feed(protocol: asyncio.Protocol, data: bytes, *, pieces: int = 1) -> None:
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        protocol.data_received(data[i : i + step])


async def test_the_request_goes_up_mapped_and_the_answer_comes_back_in_pieces() -> None:
    h = Harness(FakeBackend())
    h.send(request(f"/api/status?token={TOKEN}&x=1", token=False))
    up, proto = await upstream_of(h)
    head = bytes(up.written)
    assert head.startswith(b"GET /base/api/status?x=1 HTTP/1.1\r\n")  # base, token gone
    assert f"Authorization: token {BACKEND_TOKEN}".encode() in head  # the backend's own
    assert TOKEN.encode() not in head
    feed(proto, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", pieces=7)
    out = bytes(h.transport.written)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nhello world")
    assert h.conn.exchange is None  # done: the connection reads the next request
    assert len(h.server.pools["fake"].idle) == 1  # and the upstream one waits in the pool


async def test_a_page_streams_down_with_the_backends_token_taken_out() -> None:
    h = Harness(FakeBackend())
    h.send(request("/tree"))
    _, proto = await upstream_of(h)
    half = len(BACKEND_TOKEN) // 2
    feed(proto, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
    page = f"<p>{BACKEND_TOKEN[:half]}"
    feed(proto, b"%x\r\n%s\r\n" % (len(page), page.encode()))
    assert b"Content-Length" not in h.transport.written
    assert h.transport.written.endswith(b"\r\n\r\n3\r\n<p>\r\n")  # at once; the half token waits
    rest = f"{BACKEND_TOKEN[half:]}</p>"
    feed(proto, b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest.encode()))
    assert h.transport.written.endswith(b"\r\n4\r\n</p>\r\n0\r\n\r\n")
    assert BACKEND_TOKEN[:half].encode() not in h.transport.written


async def test_pipelined_requests_go_up_one_at_a_time_on_one_connection() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/a") + request("/api/b"))
    up, proto = await upstream_of(h)
    assert up.written.count(b"GET /base/api/") == 1  # b waits for a's answer
    feed(proto, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert up.written.count(b"GET /base/api/") == 2
    assert b"GET /base/api/b HTTP/1.1\r\n" in up.written
    feed(proto, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert h.transport.written.count(b"HTTP/1.1 204 ") == 2
    assert len(cast(FakeBackend, h.relay.target).opened) == 1


async def test_a_kept_alive_connection_the_backend_closed_is_retried_once() -> None:
    backend = FakeBackend()
    h = Harness(backend)
    h.send(request("/api/a"))
    _, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 204 No Content\r\n\r\n")  # the connection goes to the pool
    h.send(request("/api/b"))  # taken from the pool, written at once
    exchange = cast(Exchange, h.conn.exchange)
    proto.connection_lost(None)  # the backend had closed it: nothing answered yet
    assert exchange.retried
    fresh, fresh_proto = await upstream_of(h, 1)
    assert fresh.written.startswith(b"GET /base/api/b HTTP/1.1\r\n")
    feed(fresh_proto, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert h.transport.written.count(b"HTTP/1.1 204 ") == 2
    assert not h.transport.closed
