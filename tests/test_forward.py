"""Forwarding guarantees, checked against a real server that reports what it got."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from jupyter_relay.fast import client as fast_client
from jupyter_relay.server import RunningRelay

from .conftest import RELAY_TOKEN, start_relay
from .echo_app import BACKEND_TOKEN, Echo, run_echo
from .waiting import eventually


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    async with run_echo() as server:
        yield server


@pytest.fixture
async def echo_relay(echo: Echo) -> AsyncIterator[RunningRelay]:
    """The relay in front of the echo backend."""
    running = await start_relay([echo.backend_arg])
    yield running
    await running.stop()


def raw(relay: RunningRelay, path: str) -> URL:
    return URL(relay.base_url.rstrip("/") + path, encoded=True)


async def get_json(client: aiohttp.ClientSession, url: URL, **kw: Any) -> dict[str, Any]:
    async with client.get(url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


@pytest.mark.parametrize(
    "path",
    [
        "/echo/a%23b%3Fc%25d?x=%2F&y=%E2%9C%93",
        "/echo/%E2%9C%93/%20space?q=a+b",
        "/echo/x?token=" + RELAY_TOKEN + "&keep=1",
        "/echo/x?a=1&b=&c",
    ],
)
async def test_path_and_query_kept_byte_for_byte(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, path: str
) -> None:
    info = await get_json(client, raw(echo_relay, path))
    expected = path.replace("token=" + RELAY_TOKEN + "&", "")
    assert info["raw_path"] == expected


async def test_credentials_swapped_and_forwarded_headers(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    cookie = f"jupyter-relay-{echo_relay.port}=x; _xsrf=abc"
    info = await get_json(client, raw(echo_relay, "/echo/h"), headers={"Cookie": cookie})
    headers = dict(info["headers"])
    assert headers["Authorization"] == f"token {BACKEND_TOKEN}"
    assert headers["Cookie"] == "_xsrf=abc"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Host"] == f"127.0.0.1:{echo_relay.port}"
    assert headers["X-Forwarded-Proto"] == "http"
    assert RELAY_TOKEN not in json.dumps(info)
    assert "User-Agent" in headers  # the client's own, passed along


@pytest.mark.parametrize("size", [0, 1, 70_000, 5_000_000])
async def test_request_bodies_streamed_with_length_and_chunked(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, size: int
) -> None:
    body = os.urandom(size)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    for data in (body, chunks()):
        async with client.post(raw(echo_relay, "/echo/up"), data=data) as resp:
            info = await resp.json()
        assert info["size"] == size
        assert info["sha256"] == hashlib.sha256(body).hexdigest()


async def test_compressed_body_passed_untouched(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    async with client.get(raw(echo_relay, "/gzip"), headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        body = await resp.read()
    assert gzip.decompress(body) == b"compressed body " * 100


async def test_redirect_and_cookies_stay_on_relay(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    async with client.get(raw(echo_relay, "/redirect"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/landed?x=%2F"
    async with client.get(raw(echo_relay, "/cookie")) as resp:
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


@pytest.mark.parametrize("code", [204, 304, 404, 500])
async def test_statuses_without_bodies_and_errors(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, code: int
) -> None:
    async with client.get(raw(echo_relay, f"/status/{code}")) as resp:
        assert resp.status == code
        assert resp.headers["X-Status"] == str(code)
        assert await resp.read() == b""


async def test_head_keeps_length_without_body(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    async with client.head(raw(echo_relay, "/gzip")) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) > 0
        assert await resp.read() == b""


async def test_chunked_response(echo_relay: RunningRelay, client: aiohttp.ClientSession) -> None:
    async with client.get(raw(echo_relay, "/chunked")) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert await resp.text() == "".join(f"part {i}\n" for i in range(5))


async def test_backend_token_scrubbed_from_pages(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    async with client.get(raw(echo_relay, "/page")) as resp:
        text = await resp.text()
    assert BACKEND_TOKEN not in text
    assert '"token": ""' in text


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_a_page_streams_through_while_its_token_is_taken_out(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, echo: Echo, framing: str
) -> None:
    """The backend sends the rest of its page only after the client has read the first
    part: a relay that held pages whole (to scrub them) would never deliver that part."""
    half = len(BACKEND_TOKEN) // 2
    length = len(f"<p>first half, then {BACKEND_TOKEN} second half</p>")
    query = f"?length={length}" if framing == "content-length" else ""
    async with client.get(raw(echo_relay, "/stream-page" + query)) as resp:
        assert resp.status == 200
        assert "Content-Length" not in resp.headers  # it changes as the token is taken out
        first = b""
        while b"first half, then " not in first:
            first += await asyncio.wait_for(resp.content.readany(), 10)
        echo.page_more.set()
        rest = await resp.read()
    page = (first + rest).decode()
    assert page == "<p>first half, then  second half</p>"
    assert BACKEND_TOKEN[:half] not in page


async def test_websocket_subprotocol_chosen_by_backend(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, echo: Echo
) -> None:
    url = raw(echo_relay, "/ws?session_id=abc")
    async with client.ws_connect(url, protocols=("unknown", "chosen")) as ws:
        assert ws.protocol == "chosen"
    async with client.ws_connect(url, protocols=("nothing-known",)) as ws:
        assert ws.protocol is None
    async with client.ws_connect(url) as ws:
        assert ws.protocol is None
    assert echo.requests[-1]["raw_path"] == "/ws?session_id=abc"


async def test_websocket_frames_ping_close_and_large(
    echo_relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    url = raw(echo_relay, "/ws")
    async with client.ws_connect(url, autoping=False, max_msg_size=0) as ws:
        await ws.send_str("hello ✓")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "hello ✓")
        await ws.send_bytes(b"\x00\xff" * 10)
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00\xff" * 10)
        await ws.ping(b"are you there")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        size = 50 * 1024 * 1024
        await ws.send_str(f"big:{size}")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.BINARY and len(msg.data) == size
        await ws.send_str("close:4321:bye now")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (4321, "bye now")


async def test_client_close_code_reaches_backend(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, echo: Echo
) -> None:
    ws = await client.ws_connect(raw(echo_relay, "/ws"))
    await ws.close(code=4002, message=b"client done")
    await eventually(
        lambda: echo.close_codes, timeout=1, interval=0.01, what="the backend sees a close"
    )
    assert echo.close_codes == [4002]


async def test_upstream_connections_are_reused(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, echo: Echo
) -> None:
    for _ in range(20):
        await get_json(client, raw(echo_relay, "/echo/pooled"))
    ports = {r["peer_port"] for r in echo.requests if r["raw_path"] == "/echo/pooled"}
    assert len(ports) == 1, f"{len(ports)} upstream connections for 20 sequential requests"


async def test_pipelined_requests_answered_in_order(echo_relay: RunningRelay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_relay.port)
    auth = f"Authorization: token {RELAY_TOKEN}\r\nHost: 127.0.0.1\r\n"
    body = b"0123456789"
    writer.write(
        f"GET /echo/one HTTP/1.1\r\n{auth}\r\n".encode()
        + f"POST /echo/two HTTP/1.1\r\n{auth}Content-Length: 10\r\n\r\n".encode()
        + body
        + f"GET /echo/three HTTP/1.1\r\n{auth}Connection: close\r\n\r\n".encode()
    )
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    paths = [
        json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["raw_path"]
        for part in data.split(b"HTTP/1.1 200")[1:]
    ]
    assert paths == ["/echo/one", "/echo/two", "/echo/three"]


class ForgetfulBackend:
    """Answers the first request of each connection, then drops the connection on the next:
    what a backend does when it closes an idle keep-alive connection just as a request comes.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()


async def test_request_on_a_connection_the_backend_dropped_is_retried() -> None:
    backend = ForgetfulBackend()
    backend.server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    port = backend.server.sockets[0].getsockname()[1]
    running = await start_relay([f"f=http://127.0.0.1:{port}/"])
    # A fresh client connection each time: aiohttp's client would otherwise retry by itself.
    connector = aiohttp.TCPConnector(force_close=True)
    headers = {"Authorization": f"token {RELAY_TOKEN}"}
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers) as fresh:
            for _ in range(3):
                async with fresh.get(running.base_url + "x") as resp:
                    assert resp.status == 200 and await resp.read() == b"ok"
    finally:
        await running.stop()
        backend.server.close()
    assert backend.connections >= 4  # the health check, then a fresh one for each drop


async def test_bare_line_feeds_are_refused_at_once(echo_relay: RunningRelay) -> None:
    """Strict parsing (no bare LF: a request-smuggling vector), and no wait for more bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_relay.port)
    writer.write(b"GET /relay/healthz HTTP/1.1\nHost: 127.0.0.1\n\n")
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert line.split(b" ")[1] == b"400"


@pytest.mark.parametrize("sent", [b"", b"GET /echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_idle_or_half_sent_connections_time_out(
    echo: Echo, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    monkeypatch.setattr(fast_client, "KEEPALIVE_TIMEOUT", 0.3)
    monkeypatch.setattr(fast_client, "HEAD_TIMEOUT", 0.3)
    running = await start_relay([echo.backend_arg])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(sent)
        answer = await asyncio.wait_for(reader.read(), 5)  # read() returns: closed by the relay
        writer.close()
        # Nothing for an idle connection; a head that stopped half-way is told why.
        assert answer.startswith(b"HTTP/1.1 408 ") if sent else answer == b""
    finally:
        await running.stop()


async def test_a_dribbled_head_is_bounded_in_time(
    echo: Echo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte now and then re-arms no timer: the whole head has HEAD_TIMEOUT, then 408."""
    monkeypatch.setattr(fast_client, "KEEPALIVE_TIMEOUT", 1.0)
    monkeypatch.setattr(fast_client, "HEAD_TIMEOUT", 1.0)
    running = await start_relay([echo.backend_arg])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        head = f"GET /echo/x HTTP/1.1\r\nAuthorization: token {RELAY_TOKEN}\r\n" + "X: y\r\n" * 50
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = b""
        for byte in head.encode():  # one byte every 0.1 s: 60 s in all, were it not cut
            writer.write(bytes([byte]))
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.1)
            if answer or reader.at_eof():
                break
        answer += await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"did not arrive within 1 s" in answer
        assert loop.time() - started < 5
        assert echo.requests == []
    finally:
        await running.stop()


async def test_the_access_log_says_4xx_at_info_and_success_at_debug(
    echo_relay: RunningRelay, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend's 404 is an INFO line; a 200 is DEBUG (quiet by default)."""
    caplog.set_level(logging.INFO, logger="jupyter_relay.access")
    async with client.get(raw(echo_relay, "/no-such-route?token=" + RELAY_TOKEN)) as resp:
        assert resp.status == 404
    async with client.get(raw(echo_relay, "/echo/fine")) as resp:
        assert resp.status == 200

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "jupyter_relay.access"]

    await eventually(
        lambda: any("/no-such-route 404" in r.getMessage() for r in lines()),
        timeout=5,
        interval=0.02,
        what="the access log line of /no-such-route",
    )
    logged = [r for r in lines() if "/no-such-route" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.INFO]
    assert RELAY_TOKEN not in logged[0].getMessage()
    assert not any("/echo/fine" in r.getMessage() for r in lines())
