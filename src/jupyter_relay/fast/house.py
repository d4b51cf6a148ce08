"""The relay's own answers, reached by the engine as one more upstream.

What the relay composes itself (its `/relay/` pages, the mixer's merged JSON,
the Colab bridge, refusals and redirects) is an aiohttp application. The
engine forwards those requests to it exactly as it forwards to a backend,
over a connected socket pair: nothing listens, nothing else can reach it,
and the client's connection stays the engine's for the next request. Heads
pass verbatim both ways, so aiohttp sees what the client sent (the gate runs
again there, on the same bytes, and answers what it refuses).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from yarl import URL

from ..backends.base import Upstream
from ..errors import BackendError

NAME = "relay"


class House:
    """The aiohttp application as a `Target`: reached over a fresh socket pair each time."""

    def __init__(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        async def open_raw(
            factory: Callable[[], asyncio.Protocol],
        ) -> tuple[asyncio.Transport, asyncio.Protocol]:
            loop = asyncio.get_running_loop()
            ours, theirs = socket.socketpair()
            try:
                await loop.connect_accepted_socket(protocol, sock=theirs)
            except BaseException:
                ours.close()
                theirs.close()
                raise
            transport, made = await loop.create_connection(factory, sock=ours)
            return transport, made

        self._upstream = Upstream(
            base_url=URL("http://relay/"),
            open_raw=open_raw,
            session=None,
            credentials=(),
            server_hostname=None,
            secrets=(),
            host_header="relay",
            verbatim=True,
        )

    @property
    def name(self) -> str:
        return NAME

    def upstream(self) -> Upstream:
        return self._upstream

    def explain(self, error: BackendError) -> BackendError:
        return error

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        return None
