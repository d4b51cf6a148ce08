"""Websockets through the port proxy: the app negotiates, frames and close codes pass.

jupyter-server-proxy accepts the browser's first subprotocol before it asks the app
(its issue 459) and answers compression itself; here the app (tests/webapps.py) picks a
subprotocol that is not the client's first, and answers permessage-deflate with a window
size only it gives (`client_max_window_bits=11`), so the client can tell whose answer it
got. In-process relay, with its fast path and without.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .conftest import RELAY_TOKEN, WatchedRelay
from .echo_app import Echo, run_echo
from .proxying import PREFIX_HEADERS, proxy_relay, url
from .servers import free_port
from .webapps import DEFLATE_BITS, WebApp, run_webapp


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def relay() -> AsyncIterator[WatchedRelay]:
    backend: Echo
    async with (
        run_echo() as backend,
        proxy_relay([f"lab=http://127.0.0.1:{backend.port}/"]) as running,
    ):
        yield running


async def info(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    await ws.send_str("info")
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


def header(data: dict[str, Any], name: str) -> str | None:
    values = [v for k, v in data["headers"] if k.lower() == name.lower()]
    return values[0] if values else None


async def test_the_app_chooses_the_subprotocol(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    offered = ("first.v1", "chosen.v2", "other.v3")
    target = url(relay.base, f"/proxy/{app.port}/sock/_ws")
    async with client.ws_connect(target, protocols=offered) as ws:
        assert ws.protocol == "chosen.v2"
        seen = await info(ws)
        assert seen["protocol"] == "chosen.v2", seen
        # The app was offered the client's whole list, in order.
        listed = [p.strip() for p in (header(seen, "Sec-WebSocket-Protocol") or "").split(",")]
        assert listed == list(offered), seen
        assert seen["path"] == "/sock/_ws", seen
    # Nothing the app accepts: no subprotocol at all, not the client's first.
    async with client.ws_connect(target, protocols=("first.v1", "nope.v9")) as ws:
        assert ws.protocol is None
        assert (await info(ws))["protocol"] is None


async def test_text_binary_and_close_code_pass_through(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    target = url(relay.base, f"/proxy/{app.port}/_ws")
    big = os.urandom(3 * 1024 * 1024)
    async with asyncio.timeout(30), client.ws_connect(target, max_msg_size=0) as ws:
        await ws.send_str("héllo ✓")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "héllo ✓")
        await ws.send_bytes(b"\x00\xff" * 100)
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00\xff" * 100)
        await ws.send_bytes(big)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == big
        # A text message that looks like bytes stays text, and the other way round.
        await ws.send_bytes(b"close:1000")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"close:1000")
        await ws.send_str("close:4321")
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        assert msg.data == 4321, msg
        assert msg.extra == "asked to close", msg
    assert ws.close_code == 4321


async def test_compression_is_negotiated_with_the_app(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    base = relay.base
    text = "compressible " * 50_000
    target = url(base, f"/proxy/{app.port}/_ws?deflate={DEFLATE_BITS}")
    async with asyncio.timeout(30), client.ws_connect(target, compress=15, max_msg_size=0) as ws:
        # The window size only the app answers: the client got the app's answer as is.
        assert ws.compress == DEFLATE_BITS
        seen = await info(ws)
        offered = header(seen, "Sec-WebSocket-Extensions") or ""
        assert offered.startswith("permessage-deflate"), seen
        assert seen["compress"] == 15, seen  # the app's own side: aiohttp's default
        await ws.send_str(text)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == text
    # The app declines: no compression, though the client and the relay could.
    target = url(base, f"/proxy/{app.port}/_ws?deflate=off")
    async with asyncio.timeout(30), client.ws_connect(target, compress=15) as ws:
        assert ws.compress == 0
        assert (await info(ws))["compress"] == 0
        await ws.send_str("plain")
        assert (await ws.receive()).data == "plain"


async def test_websocket_forms_prefix_and_credentials(
    relay: WatchedRelay, app: WebApp, anon: aiohttp.ClientSession
) -> None:
    port = app.port
    own = f"http://127.0.0.1:{relay.running.port}"
    cases = [
        (f"/proxy/{port}/a/_ws", "/a/_ws", f"/proxy/{port}", f"localhost:{port}"),
        (
            f"/proxy/127.0.0.1:{port}/b/_ws",
            "/b/_ws",
            f"/proxy/127.0.0.1:{port}",
            f"127.0.0.1:{port}",
        ),
        (f"/proxy/lab:{port}/c/_ws", "/c/_ws", f"/proxy/lab:{port}", None),
        (f"/proxy/absolute/{port}/d/_ws", f"/proxy/absolute/{port}/d/_ws", None, None),
    ]
    for path, app_path, prefix, host in cases:
        target = url(relay.base, f"{path}?keep=1&token={RELAY_TOKEN}")
        async with anon.ws_connect(target, headers={"Origin": own}) as ws:
            seen = await info(ws)
        assert (seen["path"], seen["query"]) == (app_path, "keep=1"), (path, seen)
        for name in PREFIX_HEADERS:
            assert header(seen, name) == prefix, (path, name, seen)
        if host is not None:
            assert header(seen, "Host") == host, (path, seen)
            assert header(seen, "Origin") == f"http://{host}", (path, seen)
        assert header(seen, "Authorization") is None, seen
        assert RELAY_TOKEN not in json.dumps(seen), seen


async def test_websocket_to_nothing_is_a_502(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with client.ws_connect(url(relay.base, f"/proxy/{port}/_ws")):
            pass
    assert caught.value.status == 502, caught.value
