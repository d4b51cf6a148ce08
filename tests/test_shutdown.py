"""Graceful shutdown: in-flight requests finish, websockets close with 1001."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator

import aiohttp

from .conftest import start_relay
from .echo_app import run_echo
from .waiting import eventually


async def test_in_flight_request_finishes_and_websocket_gets_1001(
    client: aiohttp.ClientSession,
) -> None:
    async with run_echo() as echo:
        running = await start_relay([echo.backend_arg], shutdown_timeout="5")
        ws = await client.ws_connect(running.base_url + "ws")
        slow = asyncio.create_task(client.get(running.base_url + "slow?s=1"))
        # The stop begins once the slow request is at the backend: it is in flight.
        await eventually(
            lambda: any(str(r["raw_path"]).startswith("/slow") for r in echo.requests),
            timeout=10,
            what="the slow request at the backend",
        )
        stopping = asyncio.create_task(running.stop())
        resp = await slow
        assert resp.status == 200 and await resp.text() == "finally"
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
        await stopping
        await ws.close()
        try:
            async with client.get(running.base_url + "echo/x") as late:
                raise AssertionError(f"served after shutdown: {late.status}")
        except aiohttp.ClientConnectionError:
            pass


@contextlib.asynccontextmanager
async def silent_websocket_backend() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A backend that accepts a websocket, then never reads nor answers: a hung server
    (in jupyter_server's own tests, a test server whose event loop has ended)."""
    upgraded = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        while b"websocket" not in head.lower():  # the relay's health checks
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head)
        assert key is not None
        magic = key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(magic).digest())  # noqa: S324 (RFC 6455)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        upgraded.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"hung=http://127.0.0.1:{port}/", upgraded
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_backend_that_never_answers_a_close_does_not_hold_the_shutdown(
    client: aiohttp.ClientSession,
) -> None:
    """At shutdown the relay closes each websocket; a backend that never answers the close
    frame must not hold the relay for aiohttp's default 10 s (nor the shutdown timeout)."""
    async with silent_websocket_backend() as (backend, upgraded):
        running = await start_relay([backend], shutdown_timeout="30")
        ws = await client.ws_connect(running.base_url + "ws")
        await upgraded.wait()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(running.stop(), 40)
        took = loop.time() - began
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert took < 5, f"the shutdown waited {took:.1f} s for a silent backend"
