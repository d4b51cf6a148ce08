"""Two aiohttp websockets spliced: the Colab bridge's `proxied_ws` to the relay itself.

Messages are copied both ways; whichever side closes first, the other is
closed alike, with a close code that may be sent (RFC 6455 7.4.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger("jupyter_relay.colab")

# Close codes that may not be sent in a close frame (RFC 6455 7.4.1).
UNSENDABLE_CLOSE = frozenset({1005, 1006, 1015})
WS_GOING_AWAY = 1001
WS_BACKEND_LOST = 1011
# How long a close frame waits for the peer's: a peer that stopped reading must not hold
# a splice or a shutdown for aiohttp's default 10 s.
WS_CLOSE_WAIT = 2.0


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(src: Socket, dst: Socket) -> tuple[int, bytes] | None:
    """Copy messages until `src` closes; return its close code and reason."""
    while True:
        msg = await src.receive()
        kind = msg.type
        if kind is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif kind is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif kind is WSMsgType.PING:
            await dst.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await dst.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = msg.data if isinstance(msg.data, int) else 1000
            reason = (msg.extra or "").encode() if isinstance(msg.extra, str) else b""
            return code, reason
        else:  # CLOSING (we are closing it), CLOSED, ERROR: the peer is gone
            return None


def _sendable(code: int | None) -> int:
    if code is None or code in UNSENDABLE_CLOSE or code < 1000 or code >= 5000:
        return 1000
    return code


async def splice(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump both directions; whichever side closes first, close the other alike."""
    to_backend = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    done, _ = await asyncio.wait({to_backend, to_client}, return_when=asyncio.FIRST_COMPLETED)
    first = done.pop()
    try:
        result = first.result()
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
        log.debug("websocket pump ended: %s", exc)
        result = None
    if first is to_backend:
        code, reason = result if result else (WS_GOING_AWAY, b"")
        with contextlib.suppress(Exception):
            await upstream.close(code=_sendable(code), message=reason)
        with contextlib.suppress(Exception):
            await client.close(code=_sendable(code), message=reason)
    else:
        code, reason = result if result else (WS_BACKEND_LOST, b"backend connection lost")
        with contextlib.suppress(Exception):
            await client.close(code=_sendable(code), message=reason)
        with contextlib.suppress(Exception):
            await upstream.close(code=_sendable(code), message=reason)
    for task in (to_backend, to_client):
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
