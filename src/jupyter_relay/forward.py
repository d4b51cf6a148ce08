"""The forwarding of bytes, HTTP and websocket, in one place every feature uses.

Bodies are streamed both ways: request bodies are handed to aiohttp's client
as the server's stream reader, response bodies are copied chunk by chunk,
each write waiting for the client to drain (backpressure). A backend's HTML
page streams through a `Scrubber`, which takes out the backend's own token
(Jupyter prints it into its pages). Errors from aiohttp are translated here
into the relay's error tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from .backends.base import Target, Upstream
from .headers import (
    location_base,
    page_to_scrub,
    request_headers,
    response_headers,
    strip_query_param,
    upstream_target,
)
from .responses import error_response, websocket_refusal
from .scrub import Scrubber
from .translate import translate_client_error

log = logging.getLogger("jupyter_relay.forward")

# How often a request waiting for a backend looks whether its client is still there.
CLIENT_CHECK = 1.0
CLIENT_CLOSED = 499  # as nginx logs it: nobody reads this answer
SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent", "Content-Type")
# Close codes that may not be sent in a close frame (RFC 6455 7.4.1).
UNSENDABLE_CLOSE = frozenset({1005, 1006, 1015})
WS_GOING_AWAY = 1001
WS_BACKEND_LOST = 1011
# How long a close frame waits for the peer's: a peer that stopped reading (a client whose
# event loop ended, a backend that hung) must not hold a splice or a shutdown for aiohttp's
# default 10 s. The fast path does not wait at all.
WS_CLOSE_WAIT = 2.0
T = TypeVar("T")


@dataclass(frozen=True)
class ForwardSettings:
    relay_cookie: str
    response_timeout: float
    relay_is_https: bool = False


class ForwardedStream(web.StreamResponse):
    """A backend's answer, streamed: its own security headers stay as they are."""


FORWARDED = (ForwardedStream,)


def upstream_url(up: Upstream, request: web.BaseRequest, path: str | None = None) -> URL:
    """The backend URL for a request: base path mapped, relay token dropped, bytes kept.

    `path` (raw, without query) replaces the request's own, for routes that rename.
    """
    raw = request.raw_path
    own_path, _, query = raw.partition("?")
    path = own_path if path is None else path
    query = strip_query_param(query, "token")
    target = upstream_target(path, up.base_url.raw_path, up.strip_prefix)
    if query:
        target += "?" + query
    return URL(up.origin + target, encoded=True)


class Forwarder:
    """Forwards requests and websockets to a backend's `Upstream`."""

    def __init__(self, settings: ForwardSettings) -> None:
        self.settings = settings
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    def _headers(
        self, request: web.BaseRequest, up: Upstream, websocket: bool = False
    ) -> CIMultiDict[str]:
        return request_headers(
            request.headers.items(),
            client_ip=request.remote or "",
            scheme=request.scheme,
            host=request.host,
            backend_origin=up.origin,
            relay_cookie=self.settings.relay_cookie,
            credentials=up.credentials,
            websocket=websocket,
        )

    async def http(
        self, request: web.Request, backend: Target, path: str | None = None
    ) -> web.StreamResponse:
        up = backend.upstream()
        url = upstream_url(up, request, path)
        headers = self._headers(request, up)
        headers.popall("Expect", None)
        seconds = self.settings.response_timeout
        try:
            async with asyncio.timeout(seconds) as deadline:
                data = (
                    _timed_body(request.content, deadline, seconds) if request.body_exists else None
                )
                resp = await while_client_stays(
                    request,
                    up.session.request(
                        request.method,
                        url,
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        server_hostname=up.server_hostname,
                        skip_auto_headers=SKIP_AUTO_HEADERS,
                    ),
                )
        except ClientGone as exc:
            log.debug("%s %s: %s", request.method, request.path, exc)
            return web.Response(status=CLIENT_CLOSED)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise backend.explain(translate_client_error(backend.name, exc)) from exc
        try:
            instead = await backend.answered(resp.status, resp.headers.get("Location"))
            if instead is not None:
                raise instead
            return await self._relay_response(request, resp, up)
        finally:
            resp.release()

    async def _relay_response(
        self, request: web.Request, resp: aiohttp.ClientResponse, up: Upstream
    ) -> web.StreamResponse:
        out_headers = response_headers(
            resp.headers.items(),
            backend_origins=up.origins,
            relay_is_https=self.settings.relay_is_https,
            location_prefix=up.location_prefix if 300 <= resp.status < 400 else "",
            relay_cookie=self.settings.relay_cookie,
            cookie_scope=up.cookie_scope,
            cookie_relative=bool(up.strip_prefix),
            base_path=location_base(request.raw_path, up.base_url.raw_path),
        )
        # A page the backend may have printed its token into streams through a Scrubber;
        # its length changes, so it goes chunked.
        scrubber = Scrubber(up.secrets) if up.secrets and _is_scrubbable(resp) else None
        if scrubber is not None:
            out_headers.popall("Content-Length", None)
        response = ForwardedStream(status=resp.status, reason=resp.reason, headers=out_headers)
        try:
            await response.prepare(request)
            async for chunk in resp.content.iter_any():
                data = scrubber.feed(chunk) if scrubber is not None else chunk
                if data:
                    await response.write(data)
            if scrubber is not None:
                await response.write(scrubber.flush())
            await response.write_eof()
        except ConnectionError as exc:
            # The client went away (tab closed, download cancelled): routine, not an error.
            # The caller's resp.release() closes the backend connection, whose body is unread.
            log.debug("%s %s: client left mid-response: %s", request.method, request.path, exc)
        return response

    async def websocket(self, request: web.Request, backend: Target) -> web.StreamResponse:
        up = backend.upstream()
        url = upstream_url(up, request)
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        headers = self._headers(request, up, websocket=True)
        # Compression, like the subprotocol, is asked of the backend first; the client gets it
        # only if the backend agreed. (The fast path passes both handshakes' fields untouched.)
        deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "")
        try:
            async with asyncio.timeout(self.settings.response_timeout):
                upstream_ws = await while_client_stays(
                    request,
                    up.session.ws_connect(
                        url,
                        protocols=offered,
                        headers=headers,
                        autoping=False,
                        autoclose=False,
                        max_msg_size=0,
                        timeout=aiohttp.ClientWSTimeout(ws_close=WS_CLOSE_WAIT),
                        compress=15 if deflate else 0,
                        server_hostname=up.server_hostname,
                    ),
                )
        except ClientGone as exc:
            log.debug("%s %s: %s", request.method, request.path, exc)
            return web.Response(status=CLIENT_CLOSED)
        except aiohttp.WSServerHandshakeError as exc:
            # The backend refused the upgrade (unknown kernel, auth): say so with its status.
            location = exc.headers.get("Location") if exc.headers else None
            instead = await backend.answered(exc.status, location)
            if instead is not None:
                raise instead from exc
            return error_response(request, *websocket_refusal(backend.name, exc.status))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise backend.explain(translate_client_error(backend.name, exc)) from exc

        chosen = upstream_ws.protocol
        client_ws = web.WebSocketResponse(
            timeout=WS_CLOSE_WAIT,
            protocols=(chosen,) if chosen else (),
            autoping=False,
            autoclose=False,
            max_msg_size=0,
            compress=bool(upstream_ws.compress),
        )
        try:
            await client_ws.prepare(request)
        except Exception:
            await upstream_ws.close()
            raise
        self.websockets.add(client_ws)
        try:
            await splice(client_ws, upstream_ws)
        finally:
            self.websockets.discard(client_ws)
            if not upstream_ws.closed:
                await upstream_ws.close()
        return client_ws

    async def close_all(self) -> None:
        """Close every client websocket with 1001, for a graceful shutdown."""
        sockets = list(self.websockets)
        await asyncio.gather(
            *(ws.close(code=WS_GOING_AWAY, message=b"relay shutting down") for ws in sockets),
            return_exceptions=True,
        )


class ClientGone(ConnectionResetError):
    """The client closed its connection while the relay waited for the backend."""


async def while_client_stays(request: web.BaseRequest, work: Awaitable[T]) -> T:
    """Await `work`, but give it up (and its backend connection) once the client has gone.

    aiohttp does not cancel a handler whose client leaves; a hung backend would
    otherwise keep its connection until the backend timeout.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CLIENT_CHECK)
            if done:
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ClientGone("the client left before the backend answered")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


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


async def _timed_body(
    body: aiohttp.StreamReader, deadline: asyncio.Timeout, seconds: float
) -> AsyncIterator[bytes]:
    """Stream a request body so that `deadline` times the backend, not the client.

    No clock while waiting for the client's next chunk; `seconds` for the
    backend to take each chunk; and `seconds` for its answer once it has all.
    """
    loop = asyncio.get_running_loop()

    def arm(when: float | None) -> None:
        with contextlib.suppress(RuntimeError):  # the backend answered early: timeout left
            deadline.reschedule(when)

    arm(None)
    async for chunk in body.iter_any():
        arm(loop.time() + seconds)
        yield chunk
        arm(None)
    arm(loop.time() + seconds)


def _is_scrubbable(resp: aiohttp.ClientResponse) -> bool:
    return page_to_scrub(resp.content_type, resp.headers.get("Content-Encoding"))
