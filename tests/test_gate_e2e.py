"""What an outside red team found, each as a regression test.

A real relay in front of a backend that records every head it is sent (and, where
the finding was about jupyter_server, a real Jupyter server): each test asserts
what reached the backend and what the client got.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from jupyter_relay.server import RunningRelay

from .conftest import RELAY_TOKEN, start_relay
from .proxying import raw_request
from .recorder import BACKEND_TOKEN, LOGIN_COOKIE, Recorder, run_recorder
from .servers import JupyterServer
from .waiting import eventually

TOKEN_HEADER = f"Authorization: token {RELAY_TOKEN}\r\n"
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with run_recorder() as backend:
        yield backend


@pytest.fixture
async def gated(recorder: Recorder) -> AsyncIterator[tuple[Recorder, RunningRelay]]:
    running = await start_relay([recorder.backend_arg], backend_timeout="30")
    yield recorder, running
    await running.stop()


def head(method: str, target: str, port: int, extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()


# --- 1. the %2F auth bypass ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/relay%2Fhealthz", "/%72elay%2Fhealthz", "/relay%2fhealthz?a=b", "/relay%2F..%2Fhealthz"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE", "UPGRADE"])
async def test_encoded_slash_is_refused_before_the_backend(
    gated: tuple[Recorder, RunningRelay], target: str, method: str
) -> None:
    backend, relay = gated
    extra = "Connection: close\r\n"
    if method == "UPGRADE":
        method, extra = "GET", UPGRADE
    status, answer_head, body = await raw_request(
        relay.port, head(method, target, relay.port, extra)
    )
    assert status == 400, (status, body[:300])
    assert backend.heads == []
    assert b"set-cookie" not in answer_head.lower()
    if method == "GET":
        assert b"encoded slashes" in body


async def test_health_check_by_any_spelling_stays_the_relays(
    gated: tuple[Recorder, RunningRelay],
) -> None:
    backend, relay = gated
    for target in ("/relay/healthz", "/%72elay/healthz", "/relay/health%7A"):
        status, _, body = await raw_request(
            relay.port, head("GET", target, relay.port, "Connection: close\r\n")
        )
        # The relay's own answer (200 "ok" or 503 "not ok"), never the backend's page.
        assert (status, body) in ((200, b"ok\n"), (503, b"not ok\n")), (target, status, body)
    assert backend.heads == []


async def test_jupyters_login_cookie_never_reaches_a_client(
    jupyter: JupyterServer, anon: aiohttp.ClientSession, client: aiohttp.ClientSession
) -> None:
    """The finding's end: jupyter_server's `username-<host>-<port>` cookie to a stranger.

    Now a stranger gets 400, and not even the relay's own user gets the cookie:
    the relay logs in to the backend on every request.
    """
    running = await start_relay([f"lab={jupyter.backend_arg}"])
    try:
        base = running.base_url.rstrip("/")
        async with anon.get(f"{base}/relay%2Fhealthz", allow_redirects=False) as resp:
            assert resp.status == 400
            assert "Set-Cookie" not in resp.headers
        for path in ("/lab", "/tree", "/api/status", "/login"):
            async with client.get(base + path, allow_redirects=False) as resp:
                cookies = resp.headers.getall("Set-Cookie", [])
                assert not [c for c in cookies if c.startswith("username-")], (path, cookies)
                assert jupyter.token not in await resp.text()
    finally:
        await running.stop()


# --- 2. DNS rebinding, --no-auth included ---------------------------------------------------


@pytest.mark.parametrize("no_auth", [True, False])
async def test_a_rebound_name_is_refused(recorder: Recorder, no_auth: bool) -> None:
    flags: dict[str, object] = {}
    if no_auth:
        flags["no_auth"] = True
    running = await start_relay([recorder.backend_arg], **flags)
    try:
        extra = "Content-Length: 2\r\nConnection: close\r\n" + ("" if no_auth else TOKEN_HEADER)
        for host in ("evil.example", f"evil.example:{running.port}", "127.0.0.1.nip.io"):
            request = f"POST /api/kernels HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n{{}}".encode()
            status, _, body = await raw_request(running.port, request)
            assert status == 403, (host, status, body)
            assert b"--allow-host" in body
        assert recorder.heads == []
        # The relay's own names still work.
        own = f"GET /x HTTP/1.1\r\nHost: localhost:{running.port}\r\n{extra}\r\n{{}}"
        status, _, _ = await raw_request(running.port, own.encode())
        assert status == 200 and recorder.paths() == ["/x"]
    finally:
        await running.stop()


async def test_allow_host_lets_a_named_proxy_in(recorder: Recorder) -> None:
    running = await start_relay([recorder.backend_arg], allow_host=["jupyter.internal"])
    try:
        extra = TOKEN_HEADER + "Connection: close\r\n"
        request = f"GET /y HTTP/1.1\r\nHost: jupyter.internal:443\r\n{extra}\r\n".encode()
        status, _, _ = await raw_request(running.port, request)
        assert status == 200 and recorder.paths() == ["/y"]
    finally:
        await running.stop()


# --- 3. a refused upgrade answered with the backend's page --------------------------------------


async def test_a_page_answering_an_upgrade_is_not_passed_on(jupyter: JupyterServer) -> None:
    running = await start_relay([f"lab={jupyter.backend_arg}"])
    try:
        status, answer_head, body = await raw_request(
            running.port, head("GET", "/lab", running.port, TOKEN_HEADER + UPGRADE)
        )
        assert status >= 400, status
        assert jupyter.token.encode() not in answer_head + body
        assert b"refused the websocket" in body
    finally:
        await running.stop()


# --- 4. the relay's token under another spelling ---------------------------------------------


@pytest.mark.parametrize("name", ["%74oken", "t%6Fken", "%74%6f%6b%65%6e"])
async def test_an_encoded_token_name_counts_and_is_never_forwarded(
    gated: tuple[Recorder, RunningRelay], name: str
) -> None:
    backend, relay = gated
    referer = f"Referer: http://127.0.0.1:{relay.port}/lab?{name}={RELAY_TOKEN}&r=1\r\n"
    target = f"/lab?a=1&{name}={RELAY_TOKEN}&b=2"
    status, _, _ = await raw_request(
        relay.port, head("GET", target, relay.port, referer + "Connection: close\r\n")
    )
    assert status == 200
    assert len(backend.heads) == 1
    assert RELAY_TOKEN.encode() not in backend.heads[0]
    assert backend.paths() == ["/lab?a=1&b=2"]
    # A browser that navigates with it is sent, once, to the same place without it.
    page = "Sec-Fetch-Mode: navigate\r\nAccept: text/html\r\nConnection: close\r\n"
    status, answer_head, _ = await raw_request(relay.port, head("GET", target, relay.port, page))
    assert status == 302
    location = re.search(rb"(?im)^location: (.*)\r?$", answer_head)
    assert location and location.group(1).strip() == b"/lab?a=1&b=2"


# --- 5. a pipelined request behind a refused upgrade ---------------------------------------------


async def test_nothing_after_a_refused_upgrade_reaches_the_backend(
    gated: tuple[Recorder, RunningRelay],
) -> None:
    backend, relay = gated
    smuggled = f"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\n\r\n"
    request = head("GET", "/terminals/websocket/1", relay.port, TOKEN_HEADER + UPGRADE)
    status, _, body = await raw_request(relay.port, request + smuggled.encode())
    assert status == 404 and b"refused the websocket" in body
    await backend.settled()
    assert backend.paths() == ["/terminals/websocket/1"]


# --- soundness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["one field", "many fields"])
async def test_one_head_limit_one_answer(gated: tuple[Recorder, RunningRelay], shape: str) -> None:
    backend, relay = gated
    if shape == "one field":
        fields = "X-Big: " + "a" * 70 * 1024 + "\r\n"
    else:
        fields = "".join(f"X-{i}: {'b' * 1000}\r\n" for i in range(70))
    status, _, body = await raw_request(
        relay.port, head("GET", "/x", relay.port, TOKEN_HEADER + fields + "Connection: close\r\n")
    )
    assert status == 431, (status, body[:200])
    assert backend.heads == []
    # Just under the limit passes.
    fields = "X-Big: " + "a" * 60 * 1024 + "\r\n"
    status, _, _ = await raw_request(
        relay.port, head("GET", "/x", relay.port, TOKEN_HEADER + fields + "Connection: close\r\n")
    )
    assert status == 200 and backend.paths() == ["/x"]


async def test_a_hung_backend_is_let_go_when_its_client_leaves(
    gated: tuple[Recorder, RunningRelay],
) -> None:
    """The backend timeout is 30 s here; the client leaving frees the backend in ~1 s."""
    backend, relay = gated
    _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(head("GET", "/hang", relay.port, TOKEN_HEADER))
    await writer.drain()
    await eventually(
        lambda: backend.paths() == ["/hang"],
        timeout=10,
        interval=0.02,
        what="the request at the backend",
    )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    await asyncio.wait_for(backend.released.wait(), 10)


async def test_client_claims_about_the_original_request_are_not_passed(
    gated: tuple[Recorder, RunningRelay],
) -> None:
    backend, relay = gated
    claims = (
        "Forwarded: for=1.2.3.4;host=evil.example;proto=https\r\n"
        "X-Real-IP: 1.2.3.4\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Host: evil.example\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nConnection: close\r\n"
    )
    status, _, _ = await raw_request(
        relay.port, head("GET", "/x", relay.port, TOKEN_HEADER + claims)
    )
    assert status == 200
    got = backend.heads[0].decode("latin-1").lower()
    for gone in ("forwarded: for=", "x-real-ip", "x-forwarded-prefix", "evil", "x-forwarded-port"):
        assert gone not in got, (gone, got)
    assert "x-forwarded-proto: http\r\n" in got


async def test_backend_login_cookies_are_dropped_xsrf_kept(
    gated: tuple[Recorder, RunningRelay],
) -> None:
    _, relay = gated
    status, answer_head, body = await raw_request(
        relay.port, head("GET", "/page", relay.port, TOKEN_HEADER + "Connection: close\r\n")
    )
    assert status == 200
    assert LOGIN_COOKIE.encode() not in answer_head
    assert b"Set-Cookie: _xsrf=2|abc; Path=/" in answer_head
    assert BACKEND_TOKEN.encode() not in body


async def test_security_headers_on_the_relays_own_answers(
    gated: tuple[Recorder, RunningRelay], client: aiohttp.ClientSession
) -> None:
    _, relay = gated
    base = relay.base_url.rstrip("/")
    for path, status in (
        ("/relay/api/status", 200),
        ("/relay/", 200),
        ("/relay/nothing", 404),
        ("/api/kernels/not-an-id", 404),
    ):
        async with client.get(base + path) as resp:
            assert resp.status == status, path
            assert resp.headers["X-Content-Type-Options"] == "nosniff", path
            assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"], path
    async with aiohttp.ClientSession() as anon, anon.get(base + "/api/status") as resp:
        assert resp.status == 403
        assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"]


async def test_a_refused_upgrade_says_that_it_closes(
    gated: tuple[Recorder, RunningRelay], client: aiohttp.ClientSession
) -> None:
    """The connection of a refused handshake closes, and says so: a client that reuses
    connections (aiohttp's) then sends its next request on a fresh one."""
    _, relay = gated
    for path in ("api/kernels/not-an-id/channels", "terminals/websocket/1", "relay%2Fx"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(relay.base_url + path)
        assert refused.value.status in (400, 404), path
        assert refused.value.headers is not None
        assert refused.value.headers.get("Connection") == "close", path
        async with client.get(relay.base_url + "x") as resp:
            assert resp.status == 200, path
