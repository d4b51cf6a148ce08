"""Idle keep-alive connections to the backends, one pool per backend."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

log = logging.getLogger("jupyter_relay.fast")

POOL_SIZE = 64
MAX_POOLS = 1024
POOL_IDLE = 30.0


class Pool:
    """Idle keep-alive connections to one backend, newest first.

    A connection idle for longer than `POOL_IDLE` is closed rather than reused:
    backends close idle connections too, and a request sent just as they do
    would be lost.
    """

    def __init__(self) -> None:
        self.idle: deque[tuple[UpstreamConnection, float]] = deque()
        self.retired = False  # dropped from the server's pools: keep nothing

    def take(self) -> UpstreamConnection | None:
        now = asyncio.get_running_loop().time()
        while self.idle:
            conn, since = self.idle.pop()
            if conn.closed:
                continue
            if now - since > POOL_IDLE:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def give(self, conn: UpstreamConnection) -> None:
        if len(self.idle) < POOL_SIZE and not conn.closed and not self.retired:
            self.idle.append((conn, asyncio.get_running_loop().time()))
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[0].close()
