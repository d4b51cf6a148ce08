"""The engine's exchanges, driven without sockets: the test plays client and backend.

With the fakes of `fast_fakes`, every request is routed to a fake backend whose raw
connections are fake transports: what the relay sends upstream is read from one,
and the backend's answer is fed, in whatever pieces, to the upstream protocol.
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from jupyter_relay.errors import BackendUnreachable
from jupyter_relay.fast.exchange import Exchange
from jupyter_relay.routes import Road

from .fast_fakes import (
    BACKEND_TOKEN,
    ORIGIN,
    TOKEN,
    FakeBackend,
    FakeTransport,
    Harness,
    request,
)


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


async def test_the_backend_is_timed_once_it_has_the_whole_request() -> None:
    """The clock starts when the body is all sent (a slow upload is the client's pace)."""
    h = Harness(FakeBackend())
    timeout = h.relay.backend_timeout
    h.send(b"POST /api/x HTTP/1.1\r\nHost: h\r\nAuthorization: token " + TOKEN.encode())
    h.send(b"\r\nContent-Length: 10\r\n\r\n12345")
    up, _ = await upstream_of(h)
    h.clock.advance(timeout * 3)  # the client is slow: nobody is timed yet
    assert h.transport.written == b""
    h.send(b"67890")
    assert up.written.endswith(b"\r\n\r\n1234567890")
    h.clock.advance(timeout - 1)
    assert h.transport.written == b""
    h.clock.advance(1)
    assert h.transport.written.startswith(b"HTTP/1.1 504 ")
    assert up.closed and h.transport.closed


async def test_an_idle_connection_is_closed_and_a_dribbled_head_gets_408() -> None:
    from jupyter_relay.fast.client import HEAD_TIMEOUT, KEEPALIVE_TIMEOUT

    idle = Harness(FakeBackend())
    idle.clock.advance(KEEPALIVE_TIMEOUT - 1)
    assert not idle.transport.closed
    idle.clock.advance(1)
    assert idle.transport.closed and idle.transport.written == b""

    slow = Harness(FakeBackend())
    for byte in b"GET /api/status HTTP/1.1\r\n":  # a byte a second: no timer is re-armed
        slow.send(bytes([byte]))
        slow.clock.advance(1)
    slow.clock.advance(HEAD_TIMEOUT)
    assert slow.transport.written.startswith(b"HTTP/1.1 408 ")
    assert slow.transport.closed


async def test_backpressure_pauses_the_other_side_both_ways() -> None:
    h = Harness(FakeBackend())
    h.send(request("/files/big"))
    up, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    h.conn.pause_writing()  # the client reads slowly: stop reading the backend
    assert not up.reading
    h.conn.resume_writing()
    assert up.reading
    cast(asyncio.Protocol, proto).pause_writing()  # the backend reads slowly: stop the client
    assert not h.transport.reading
    cast(asyncio.Protocol, proto).resume_writing()
    assert h.transport.reading


async def test_a_chunked_upload_is_framed_anew_for_the_backend() -> None:
    h = Harness(FakeBackend())
    head = b"PUT /api/contents/a HTTP/1.1\r\nHost: h\r\nAuthorization: token " + TOKEN.encode()
    h.send(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel")
    up, proto = await upstream_of(h)
    h.send(b"lo\r\n0\r\nX-Trailer: t\r\n\r\n" + request("/api/next"))
    sent = bytes(up.written)
    assert b"Transfer-Encoding: chunked\r\n" in sent
    assert sent.endswith(b"\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")  # no extension, no trailer
    assert b"/api/next" not in sent  # the next request waits for this one's answer
    feed(proto, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert b"GET /base/api/next HTTP/1.1" in up.written


async def test_a_broken_chunked_upload_is_400_and_goes_no_further() -> None:
    h = Harness(FakeBackend())
    head = b"PUT /api/contents/a HTTP/1.1\r\nHost: h\r\nAuthorization: token " + TOKEN.encode()
    h.send(head + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    up, _ = await upstream_of(h)
    h.send(b"zz\r\nsmuggled\r\n")
    assert h.transport.written.startswith(b"HTTP/1.1 400 ")
    assert b"chunked request body" in h.transport.written
    assert b"smuggled" not in up.written and up.closed and h.transport.closed


async def test_a_head_answer_has_no_body_whatever_its_length_says() -> None:
    h = Harness(FakeBackend())
    h.send(request("/files/big").replace(b"GET", b"HEAD", 1) + request("/api/next"))
    up, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert h.transport.written.endswith(b"Content-Length: 1000\r\n\r\n")
    assert up.closed  # llhttp would wait for 1000 bytes: this connection is not reused
    _, fresh = await upstream_of(h, 1)
    feed(fresh, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert h.transport.written.count(b"HTTP/1.1 ") == 2


async def test_an_http10_client_gets_no_chunks_and_the_close_ends_the_body() -> None:
    h = Harness(FakeBackend())
    h.send(b"GET /files/x HTTP/1.0\r\nAuthorization: token " + TOKEN.encode() + b"\r\n\r\n")
    up, proto = await upstream_of(h)
    assert up.written.startswith(b"GET /base/files/x HTTP/1.1\r\n")
    feed(proto, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    out = bytes(h.transport.written)
    assert b"Transfer-Encoding" not in out and b"Connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nhello")
    assert h.transport.closed


async def test_the_house_gets_the_clients_head_and_gives_its_own_answer() -> None:
    """Verbatim both ways: the relay's own answers set its cookie, which a backend may not."""
    h = Harness()  # no target: the house
    sent = request("/relay/api/status", extra=f"Cookie: c={TOKEN}\r\n")
    h.send(sent)
    exchange = cast(Exchange, h.conn.exchange)
    if exchange.task is not None:
        await exchange.task
    up, proto = h.relay.house_backend.opened[0]
    assert bytes(up.written) == sent
    answer = b"HTTP/1.1 302 Found\r\nLocation: /lab\r\nSet-Cookie: c=v; HttpOnly\r\n"
    feed(proto, answer + b"Content-Length: 0\r\n\r\n")
    assert h.transport.written.startswith(answer)


@pytest.mark.parametrize("veto", [True, False])
async def test_an_answer_the_backend_may_veto_waits_for_its_word(veto: bool) -> None:
    error = BackendUnreachable("fake", "the hub says the server 'fake' is not running")
    backend = FakeBackend(
        vetoes=lambda status, location: status == 424, veto=error if veto else None
    )
    h = Harness(backend)
    h.send(request("/api/contents"))
    up, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 424 Failed Dependency\r\nContent-Length: 8\r\n\r\nhub page")
    assert h.transport.written == b""  # held while the backend is asked
    exchange = cast(Exchange, h.conn.exchange)
    assert exchange.task is not None
    await exchange.task
    assert backend.asked == [(424, None)]
    if veto:
        assert h.transport.written.startswith(b"HTTP/1.1 502 ")
        assert b"is not running" in h.transport.written and b"hub page" not in h.transport.written
        assert up.closed
    else:
        assert h.transport.written.startswith(b"HTTP/1.1 424 ")
        assert h.transport.written.endswith(b"\r\n\r\nhub page")
        assert up.reading and h.conn.exchange is None


async def test_an_answer_not_vetoable_passes_without_asking() -> None:
    backend = FakeBackend(vetoes=lambda status, location: status == 424)
    h = Harness(backend)
    h.send(request("/api/contents"))
    _, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert h.transport.written.endswith(b"\r\n\r\n{}") and backend.asked == []


async def test_a_house_answer_that_says_close_closes_the_clients_connection() -> None:
    """A refused upgrade, say: the house said `Connection: close`, so the client was told."""
    h = Harness()
    h.send(request("/", token=False).replace(b"GET", b"HEAD", 1))
    exchange = cast(Exchange, h.conn.exchange)
    if exchange.task is not None:
        await exchange.task
    _, proto = h.relay.house_backend.opened[0]
    feed(proto, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 20\r\nConnection: close\r\n\r\n")
    assert h.transport.written.endswith(b"Connection: close\r\n\r\n")
    assert h.transport.closed


async def test_the_house_is_not_timed_by_the_engine() -> None:
    """The mixer waits for slow backends itself and names them; the engine must not cut in
    first with a timeout of "backend 'relay'"."""
    h = Harness()
    h.send(request("/api/kernels"))
    exchange = cast(Exchange, h.conn.exchange)
    if exchange.task is not None:
        await exchange.task
    h.clock.advance(h.relay.backend_timeout * 2)
    assert h.transport.written == b""
    _, proto = h.relay.house_backend.opened[0]
    feed(proto, b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 2\r\n\r\n{}")
    assert h.transport.written.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")


async def test_an_allowed_origin_gets_the_relays_cors_fields_never_the_backends() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/contents", extra=f"Origin: {ORIGIN}\r\n"))
    _, proto = await upstream_of(h)
    feed(
        proto,
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nVary: Accept-Encoding\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    head = bytes(h.transport.written).partition(b"\r\n\r\n")[0].decode()
    assert f"Access-Control-Allow-Origin: {ORIGIN}" in head
    assert "Access-Control-Allow-Origin: *" not in head and head.count("Allow-Origin") == 1
    assert "Access-Control-Allow-Credentials: true" in head and "Vary: Origin" in head
    assert "Vary: Accept-Encoding" in head


async def test_a_foreign_origin_gets_no_cors_field_not_even_the_backends() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/contents", extra="Origin: https://evil.example\r\n"))
    _, proto = await upstream_of(h)
    feed(proto, b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n")
    assert b"Access-Control-" not in h.transport.written


async def test_an_error_answer_to_an_allowed_origin_carries_the_fields() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/contents", extra=f"Origin: {ORIGIN}\r\n"))
    _, proto = await upstream_of(h)
    proto.connection_lost(None)  # the backend hung up: the relay's own 502
    assert h.transport.written.startswith(b"HTTP/1.1 502 ")
    assert f"Access-Control-Allow-Origin: {ORIGIN}".encode() in h.transport.written


async def test_each_answer_is_counted_with_the_time_to_its_head() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/a"))
    _, proto = await upstream_of(h)
    h.clock.advance(0.3)
    feed(proto, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    meter = h.relay.meter
    assert meter.requests == {(Road.PRIMARY, "fake", 4): 1}
    assert meter.latency["fake"].total == pytest.approx(0.3)
    assert dict(meter.latency["fake"].buckets())["0.25"] == 0
    assert dict(meter.latency["fake"].buckets())["0.5"] == 1


async def test_a_backend_that_does_not_answer_is_counted_without_a_latency() -> None:
    h = Harness(FakeBackend())
    h.send(request("/api/a"))
    await upstream_of(h)
    h.clock.advance(h.relay.backend_timeout)
    assert h.transport.written.startswith(b"HTTP/1.1 504 ")
    assert h.relay.meter.requests == {(Road.PRIMARY, "fake", 5): 1}
    assert h.relay.meter.latency == {}


async def test_a_backends_secure_cookie_stays_secure_when_the_relay_speaks_https() -> None:
    """Over plain HTTP a browser would drop a Secure cookie, so the relay takes the flag
    off; with --certfile it serves HTTPS, and the flag stays."""
    for scheme, kept in (("http", False), ("https", True)):
        h = Harness(FakeBackend())
        h.relay.scheme = scheme
        h.send(request("/lab"))
        _, proto = await upstream_of(h)
        feed(proto, b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b; Secure\r\nContent-Length: 0\r\n\r\n")
        assert (b"Set-Cookie: a=b; Secure" in h.transport.written) is kept, h.transport.written
