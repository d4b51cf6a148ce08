"""Graceful shutdown: in-flight requests finish, websockets close with 1001."""

from __future__ import annotations

import asyncio

import aiohttp

from .conftest import start_relay
from .echo_app import run_echo


async def test_in_flight_request_finishes_and_websocket_gets_1001(
    client: aiohttp.ClientSession,
) -> None:
    async with run_echo() as echo:
        running = await start_relay([echo.backend_arg], shutdown_timeout="5")
        ws = await client.ws_connect(running.base_url + "ws")
        slow = asyncio.create_task(client.get(running.base_url + "slow?s=1"))
        await asyncio.sleep(0.3)
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
