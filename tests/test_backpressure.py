"""Backpressure: a client that does not read makes the relay stop reading, not buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import psutil

from .echo_app import run_echo
from .servers import start_relay_process

MIB = 1 << 20


async def test_slow_websocket_reader_keeps_relay_memory_flat(tmp_path: Path) -> None:
    count = 300  # 300 MiB offered by the backend
    async with run_echo() as echo:
        relay = await asyncio.to_thread(
            start_relay_process, ["--port", "0", "--backend", echo.backend_arg], tmp_path
        )
        try:
            proc = psutil.Process(relay.proc.pid)
            baseline = proc.memory_info().rss
            headers = {"Authorization": f"token {relay.token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                ws = await session.ws_connect(f"{relay.base}flood?n={count}", max_msg_size=0)
                await asyncio.sleep(3)  # read nothing: the backend is far faster than us
                stalled_growth = proc.memory_info().rss - baseline
                received = 0
                async for msg in ws:
                    assert msg.type is aiohttp.WSMsgType.BINARY
                    assert int.from_bytes(msg.data[:4], "big") == received
                    received += 1
                await ws.close()
            peak_growth = proc.memory_info().rss - baseline
        finally:
            relay.stop()
    print(
        f"\nrelay RSS growth while stalled: {stalled_growth / MIB:.1f} MiB, "
        f"after: {peak_growth / MIB:.1f} MiB, for {count} MiB offered"
    )
    assert received == count
    assert stalled_growth < 64 * MIB


async def test_slow_websocket_backend_keeps_relay_memory_flat(tmp_path: Path) -> None:
    count = 300
    async with run_echo() as echo:
        relay = await asyncio.to_thread(
            start_relay_process, ["--port", "0", "--backend", echo.backend_arg], tmp_path
        )
        try:
            proc = psutil.Process(relay.proc.pid)
            baseline = proc.memory_info().rss
            headers = {"Authorization": f"token {relay.token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                ws = await session.ws_connect(f"{relay.base}sink?wait=3", max_msg_size=0)
                block = b"\xcd" * MIB

                async def send_all() -> None:
                    for i in range(count):
                        await ws.send_bytes(i.to_bytes(4, "big") + block)
                    await ws.send_str("done")

                sender = asyncio.create_task(send_all())
                await asyncio.sleep(2.5)  # the backend reads nothing yet
                stalled_growth = proc.memory_info().rss - baseline
                assert not sender.done(), "the sender was never slowed down"
                await sender
                reply = await ws.receive()
                await ws.close()
        finally:
            relay.stop()
    print(f"\nrelay RSS growth while the backend stalled: {stalled_growth / MIB:.1f} MiB")
    assert reply.data == str(count)
    assert stalled_growth < 64 * MIB
