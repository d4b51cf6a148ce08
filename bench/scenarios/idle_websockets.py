"""Scenario 5, many idle websockets held open through each proxy: memory per connection.

2,000 websockets are opened through the proxy, 64 at a time, then held idle:
the proxy's resident memory growth divided by the connections held is its
cost per connection. `direct` has no proxy and no figure.

The backend is the node echo, not a kernel's channels, because a stock
`jupyter server` cannot hold 2,000 kernel websockets: each takes four ZMQ
sockets and the server's ZMQ context allows 1,023 (libzmq's default), so
past ~250 connections it closes new ones ("ZMQError: Too many open files").
Each new kernel connection also makes the server nudge the kernel, whose
busy/idle statuses go to every connection already open: thousands of
connections to one kernel are a storm of N² messages, not idle. What a proxy
keeps per websocket does not depend on what is behind it.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import aiohttp
import psutil

from ..backends import NODE
from ..paths import CHP, JSP, NGINX, RELAY, ProxyPath
from ..procs import Child
from ..settings import MIB
from .base import Context, Metric, Metrics, Scenario

OPENING_AT_ONCE = 64


class Holder:
    """Websockets held open and read: closures noticed, any message drained."""

    def __init__(self) -> None:
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = 0
        self.last_message = time.monotonic()

    def hold(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.sockets.append(ws)
        self.tasks.append(asyncio.create_task(self._drain(ws)))

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            self.last_message = time.monotonic()
        self.closed += 1

    @property
    def alive(self) -> int:
        return len(self.sockets) - self.closed

    async def quiet(self, seconds: float, timeout: float = 60) -> None:
        """Wait until no message came for `seconds`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_message < seconds:
            if time.monotonic() > deadline:
                raise RuntimeError(f"messages still flowing after {timeout:.0f} s")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _upstream_connections(ctx: Context, proxy: Child) -> int:
    """TCP connections the proxy (and its children) holds to the websocket backend."""
    port = ctx.backends.ports[NODE]
    count = 0
    for proc in proxy.processes():
        try:
            conns = proc.net_connections("tcp")
        except psutil.Error:
            continue
        count += sum(
            1
            for c in conns
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
        )
    return count


async def _wait_upstream(ctx: Context, proxy: Child, holder: Holder, timeout: float = 60) -> None:
    """Wait until the proxy holds a backend connection for every client websocket.

    A proxy may answer the client before it has connected upstream
    (jupyter-server-proxy does): memory is measured once all are through.
    """
    deadline = time.monotonic() + timeout
    while (reached := _upstream_connections(ctx, proxy)) < holder.alive:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{reached} of {holder.alive} websockets reached the backend")
        await asyncio.sleep(0.2)


class IdleWebsockets(Scenario):
    name = "idle_websockets"
    title = "Idle websockets"
    paths = (RELAY, CHP, JSP, NGINX)
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("kib_per_connection", "RSS per connection", "KiB", False, True, True),
        Metric("rss_growth_mib", "RSS growth", "MiB", False, True),
        Metric("open_s", "time to open them all", "s", False, True),
        Metric("connections", "connections held", "conns", True, True),
    )

    def timeout(self, ctx: Context) -> float:
        return 120 + ctx.settings.idle_connections * 0.05

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        count = ctx.settings.idle_connections
        settle = 1.0 if ctx.settings.quick else 2.0
        server = path.servers[NODE]
        connector = aiohttp.TCPConnector(limit=0)
        opening = asyncio.Semaphore(OPENING_AT_ONCE)
        holder = Holder()

        async with aiohttp.ClientSession(headers=ctx.headers, connector=connector) as session:

            async def open_one() -> None:
                async with opening:
                    holder.hold(await session.ws_connect(path.ws_url(NODE, "idle")))

            await asyncio.sleep(settle)
            before = server.rss()
            started = time.monotonic()
            try:
                results = await asyncio.gather(
                    *(open_one() for _ in range(count)), return_exceptions=True
                )
                open_s = time.monotonic() - started
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise RuntimeError(
                        f"{len(failed)} of {count} websockets did not open: {failed[0]!r}"
                    )
                await _wait_upstream(ctx, server, holder)
                await holder.quiet(settle)
                if holder.closed:
                    raise RuntimeError(f"{holder.closed} of {count} websockets closed while idle")
                after = server.rss()
                alive = holder.alive
            finally:
                await holder.close()
        growth = after - before
        return {
            "kib_per_connection": growth / alive / 1024,
            "rss_growth_mib": growth / MIB,
            "open_s": open_s,
            "connections": float(alive),
        }
