"""Upstream sockets that never sit on a delayed ACK.

jupyter_server does not set `TCP_NODELAY` on its kernel websockets, so when
it writes two small frames in a row (a status message, then the reply),
Nagle's algorithm holds the second until the first is acknowledged, and a
Linux client delays that ACK by up to 40 ms. A kernel that answers in 3 ms
then looks like one that answers in 45 ms. Re-arming `TCP_QUICKACK` after
every read makes the relay acknowledge at once, so Nagle releases at once:
clients going through the relay get the kernel's real speed.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class QuickAckHandler(ResponseHandler):
    """aiohttp's client protocol, re-arming `TCP_QUICKACK` after each read."""

    _quickack_sock: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if (
            QUICKACK is not None
            and sock is not None
            and sock.family
            in (
                socket.AF_INET,
                socket.AF_INET6,
            )
        ):
            self._quickack_sock = sock
            self._rearm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._quickack_sock is not None:
            self._rearm()

    def _rearm(self) -> None:
        # The kernel clears QUICKACK by itself after a while: set it again each time.
        with contextlib.suppress(OSError):
            self._quickack_sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)


class QuickAckConnector(aiohttp.TCPConnector):
    """A TCP connector whose connections use `QuickAckHandler`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # partial is invariant in its result type; a subclass is what aiohttp expects.
        self._factory = cast(
            "functools.partial[ResponseHandler]",
            functools.partial(QuickAckHandler, loop=self._loop),
        )


class OpenerConnector(aiohttp.BaseConnector):
    """A connector whose connections come from an opener: TCP to checked addresses, SSH channels.

    The URL's host is never resolved: the opener alone decides what is dialled.
    """

    def __init__(self, opener: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._opener = opener
        self._factory = cast(
            "functools.partial[ResponseHandler]",
            functools.partial(QuickAckHandler, loop=self._loop),
        )

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> ResponseHandler:
        try:
            _, protocol = await self._opener(self._factory)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from exc
        return cast(ResponseHandler, protocol)
