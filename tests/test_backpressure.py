"""Backpressure: a side that does not read makes the relay stop reading, not buffer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psutil

from .echo_app import run_echo
from .servers import start_relay_process

MIB = 1 << 20
COUNT = 300  # messages of 1 MiB: far more than any buffer on the way


@asynccontextmanager
async def relay_session(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, psutil.Process, aiohttp.ClientSession]]:
    """The relay command in front of the echo backend, and a client with its token."""
    async with run_echo() as echo:
        relay = await asyncio.to_thread(
            start_relay_process, ["--port", "0", "--backend", echo.backend_arg], tmp_path
        )
        try:
            headers = {"Authorization": f"token {relay.token}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                yield relay.base, psutil.Process(relay.proc.pid), session
        finally:
            relay.stop()


async def test_slow_websocket_reader_keeps_relay_memory_flat(tmp_path: Path) -> None:
    async with relay_session(tmp_path) as (base, proc, session):
        baseline = proc.memory_info().rss
        ws = await session.ws_connect(f"{base}flood?n={COUNT}", max_msg_size=0)
        # Time is the measure: read nothing for 3 s while the backend (far faster than us)
        # floods; the relay's memory then shows whether it buffered what we did not read.
        await asyncio.sleep(3)
        stalled_growth = proc.memory_info().rss - baseline
        received = 0
        async for msg in ws:
            assert msg.type is aiohttp.WSMsgType.BINARY
            assert int.from_bytes(msg.data[:4], "big") == received
            received += 1
        await ws.close()
    print(
        f"\nrelay RSS growth while the client stalled: {stalled_growth / MIB:.1f} MiB "
        f"for {COUNT} MiB offered"
    )
    assert received == COUNT
    assert stalled_growth < 64 * MIB


async def test_slow_websocket_backend_keeps_relay_memory_flat(tmp_path: Path) -> None:
    async with relay_session(tmp_path) as (base, proc, session):
        baseline = proc.memory_info().rss
        ws = await session.ws_connect(f"{base}sink?wait=3", max_msg_size=0)
        block = b"\xcd" * MIB

        async def send_all() -> None:
            for i in range(COUNT):
                await ws.send_bytes(i.to_bytes(4, "big") + block)
            await ws.send_str("done")

        sender = asyncio.create_task(send_all())
        # Time is the measure: the backend reads nothing for its first 3 s; the sender is
        # to be held back meanwhile, and the relay's memory must not grow with what it sent.
        await asyncio.sleep(2.5)
        stalled_growth = proc.memory_info().rss - baseline
        assert not sender.done(), "the sender was never slowed down"
        await sender
        reply = await ws.receive()
        await ws.close()
    print(f"\nrelay RSS growth while the backend stalled: {stalled_growth / MIB:.1f} MiB")
    assert reply.data == str(COUNT)
    assert stalled_growth < 64 * MIB
