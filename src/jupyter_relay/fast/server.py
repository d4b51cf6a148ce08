"""The listening side of the fast path: its connections, pools and shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..gate import Policy
from ..routes import Forward, Later, Road
from .client import ClientConnection
from .pool import MAX_POOLS, Pool


class Metering(Protocol):
    """Where the engine counts what it does (`metrics.Meter` is one); called per request."""

    def observe(self, road: Road, backend: str, status: int, latency: float | None) -> None:
        """One answer (`status` 0: none was sent); `latency`: seconds to the backend's head."""

    def websocket(self, backend: str, change: int) -> None:
        """A websocket to `backend` opened (+1) or closed (-1)."""


class Router(Protocol):
    """What the engine needs of the relay (`relay.Relay` is one): the gate, the roads, a meter."""

    policy: Policy
    cookie_name: str  # the relay's own cookie: never forwarded, never set by a backend
    scheme: str  # how clients reach the relay: "http", or "https" with a certificate

    @property
    def meter(self) -> Metering: ...

    @property
    def backend_timeout(self) -> float: ...

    @property
    def house(self) -> Forward: ...

    def route(self, path: str, raw_path: str, query: str, method: str) -> Forward | Later: ...


log = logging.getLogger("jupyter_relay.fast")


class FastServer:
    """The listening side: makes a `ClientConnection` per accepted connection."""

    def __init__(self, relay: Router) -> None:
        self.relay = relay
        self.connections: set[ClientConnection] = set()
        self.pools: dict[str, Pool] = {}
        self.server: asyncio.AbstractServer | None = None

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def pool(self, backend: str) -> Pool:
        pool = self.pools.get(backend)
        if pool is None:
            if len(self.pools) >= MAX_POOLS:
                self._retire_idle_pools()
            pool = self.pools[backend] = Pool()
        return pool

    def _retire_idle_pools(self) -> None:
        """Bound the pools (one per port-proxy prefix, too): drop those holding nothing."""
        for name, pool in list(self.pools.items()):
            if not pool.idle:
                pool.retired = True
                del self.pools[name]

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let exchanges finish within `timeout`."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.tunnel is not None:
                conn.tunnel.going_away()
            elif conn.exchange is None:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.exchange is not None for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.close()
