"""The relay's token and Origin checks, end to end; refused requests never reach a backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from jupyter_relay.server import RunningRelay

from .conftest import RELAY_TOKEN, start_relay
from .kernel_client import V1

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class CountingBackend:
    """A real listening socket that counts the connections it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingBackend, RunningRelay]]:
    backend = CountingBackend()
    backend.server = await asyncio.start_server(backend._handle, "127.0.0.1", 0)
    running = await start_relay(
        [f"c=http://127.0.0.1:{backend.port}/"], allow_origin=["https://trusted.example.org"]
    )
    yield backend, running
    await running.stop()
    backend.server.close()


@pytest.mark.parametrize("method", METHODS)
async def test_missing_and_wrong_token_refused_without_backend_contact(
    counting: tuple[CountingBackend, RunningRelay], anon: aiohttp.ClientSession, method: str
) -> None:
    backend, relay = counting
    before = backend.connections
    url = relay.base_url + "api/kernels"
    async with anon.request(method, url) as resp:
        assert resp.status == 403  # as jupyter_server answers
        assert resp.headers["WWW-Authenticate"].startswith("token")
        if method != "HEAD":
            body = await resp.json()
            assert body["reason"] == "Token Required" and "?token=" in body["message"]
    for headers, query in (
        ({"Authorization": "token wrong"}, ""),
        ({}, "?token=wrong"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, ""),
    ):
        async with anon.request(method, url + query, headers=headers) as resp:
            assert resp.status == 403
    assert backend.connections == before


async def test_websocket_upgrade_needs_token(
    counting: tuple[CountingBackend, RunningRelay], anon: aiohttp.ClientSession
) -> None:
    backend, relay = counting
    before = backend.connections
    for query in ("", "?token=wrong"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anon.ws_connect(relay.base_url + "api/kernels/x/channels" + query)
        assert info.value.status in (401, 403)
    assert backend.connections == before


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.example.org", False),
        ("null", False),
        ("https://trusted.example.org", True),
        (None, True),
    ],
)
async def test_origin_checked_on_state_changes(
    counting: tuple[CountingBackend, RunningRelay],
    client: aiohttp.ClientSession,
    origin: str | None,
    allowed: bool,
) -> None:
    backend, relay = counting
    before = backend.connections
    headers = {"Origin": origin} if origin else {}
    async with client.post(relay.base_url + "api/contents", headers=headers) as resp:
        if allowed:
            assert resp.status == 200
        else:
            assert resp.status == 403
            body = await resp.json()
            assert body["reason"] == "Origin Not Allowed"
            assert f"--allow-origin {origin}" in body["message"]
            assert backend.connections == before
    # A GET is a read: Origin is not needed to be trusted (the token still is).
    async with client.get(relay.base_url + "x", headers=headers) as resp:
        assert resp.status == 200


async def test_same_origin_allowed(
    counting: tuple[CountingBackend, RunningRelay], client: aiohttp.ClientSession
) -> None:
    _, relay = counting
    origin = f"http://127.0.0.1:{relay.port}"
    async with client.post(relay.base_url + "api/contents", headers={"Origin": origin}) as resp:
        assert resp.status == 200


async def test_browser_page_without_token_explains(
    counting: tuple[CountingBackend, RunningRelay], anon: aiohttp.ClientSession
) -> None:
    _, relay = counting
    headers = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    async with anon.get(relay.base_url + "lab/<script>alert(1)</script>", headers=headers) as resp:
        assert resp.status == 403
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "printed when it started" in page
    assert "<script>" not in page


async def test_token_in_url_becomes_cookie(
    relay: RunningRelay, anon: aiohttp.ClientSession
) -> None:
    """A browser's first visit: the token leaves the address bar, the cookie carries it."""
    headers = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    first = URL(f"{relay.base_url}lab/tree?reset&token={RELAY_TOKEN}&q=%20%2F", encoded=True)
    async with anon.get(first, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/lab/tree?reset&q=%20%2F"
        cookie = resp.cookies[f"jupyter-relay-{relay.port}"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        assert RELAY_TOKEN not in cookie.value
    async with anon.get(relay.base_url + "api/kernelspecs") as resp:
        assert resp.status == 200
    kernel_id = None
    async with anon.post(relay.base_url + "api/kernels", json={"name": "python3"}) as resp:
        assert resp.status == 201
        kernel_id = (await resp.json())["id"]
    try:
        url = f"{relay.base_url}api/kernels/{kernel_id}/channels"
        async with anon.ws_connect(url, protocols=(V1,)) as ws:
            assert ws.protocol == V1
    finally:
        async with anon.delete(f"{relay.base_url}api/kernels/{kernel_id}") as resp:
            assert resp.status == 204


async def test_bearer_and_query_token(relay: RunningRelay, anon: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {RELAY_TOKEN}"}
    async with anon.get(relay.base_url + "api/kernelspecs", headers=headers) as resp:
        assert resp.status == 200
    async with anon.get(f"{relay.base_url}api/kernelspecs?token={RELAY_TOKEN}") as resp:
        assert resp.status == 200


async def test_health_open_status_closed(
    relay: RunningRelay, anon: aiohttp.ClientSession, client: aiohttp.ClientSession
) -> None:
    async with anon.get(relay.base_url + "relay/healthz") as resp:
        assert resp.status == 200 and await resp.text() == "ok\n"
    async with anon.get(relay.base_url + "relay/api/status") as resp:
        assert resp.status == 403
    async with client.get(relay.base_url + "relay/api/status") as resp:
        status = await resp.json()
    text = str(status)
    (backend,) = status["backends"]
    assert backend["name"] == "lab" and backend["kind"] == "jupyter"
    assert backend["reachable"] is True and backend["latency_ms"] > 0
    assert "token" not in backend["url"] and RELAY_TOKEN not in text
    async with client.get(relay.base_url + "relay/nothing") as resp:
        assert resp.status == 404


async def test_no_auth_on_loopback(
    counting: tuple[CountingBackend, RunningRelay], anon: aiohttp.ClientSession
) -> None:
    backend, _ = counting
    running = await start_relay([f"c=http://127.0.0.1:{backend.port}/"], no_auth=True)
    try:
        async with anon.get(running.base_url + "anything") as resp:
            assert resp.status == 200
        assert "token" not in running.url
    finally:
        await running.stop()
