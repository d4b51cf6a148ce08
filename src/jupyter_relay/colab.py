"""The Colab bridge: `/http_over_websocket` and friends, in front of any backend.

Colab's page cannot make HTTP requests to `http://localhost`, but may open a
websocket to it; so it sends each HTTP request as a JSON message and reads the
answer back in messages (see `colab_protocol`). The handshake is authenticated
like every request (the relay's token, an allowed Origin: `--colab`); Colab's
page brings the token inside `jupyter_http_over_ws_auth_url`, which the auth
middleware reads on the relay's own origin and nobody fetches. The inner
requests carry exactly that authority, the relay's token, and nothing more.

Inner requests are sent to the relay's own listening socket on loopback, so
they take the same road as any client's: auth, the fast path, the mixer, the
backends. (The reference extension dials the Host header of the handshake,
which breaks behind SSH tunnels; the relay dials its own bound address.)

Unlike the reference, the requests of one socket run concurrently (at most
MAX_IN_FLIGHT, their bodies at most BODY_BUDGET; the next message is read only
when both have room, so a client that sends faster than the relay answers is
slowed, not buffered), binary bodies pass byte for byte, and every request gets
exactly one final `done: true`, errors, timeouts and stalled bodies included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from . import auth
from . import colab_protocol as protocol
from .headers import raw_after, strip_query_param
from .responses import error_response
from .wsplice import WS_GOING_AWAY, splice

log = logging.getLogger("jupyter_relay.colab")

PREFIX = protocol.BRIDGE_PREFIX
MAX_IN_FLIGHT = 32
MESSAGE_LIMIT = 32 * 1024 * 1024  # a larger request gets the protocol's 400
FRAME_LIMIT = MESSAGE_LIMIT + 16 * 1024 * 1024  # beyond this aiohttp closes (1009)
BODY_BUDGET = 64 * 1024 * 1024  # request bodies in flight on one socket, at most
HEARTBEAT = 30.0  # a ping every so often: a vanished page is noticed, its requests end
AUTH_URL_PARAM = protocol.AUTH_URL_PARAM


@dataclass(frozen=True)
class BridgeSettings:
    """What the bridge knows of the relay: where it listens, and its token and cookie."""

    ip: str
    port: int
    token: str | None
    cookie_name: str
    backend_timeout: float
    scheme: str = "http"  # "https" when the relay serves TLS
    sock: Path | None = None  # the relay's Unix socket, when it listens on one


class Bridge:
    """The bridge's handlers and its loopback client to the relay itself."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    @property
    def own_base(self) -> str:
        if self.settings.sock is not None:
            return "http://localhost"  # through the socket (the connector's)
        host = self.settings.ip
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        shown = f"[{host}]" if ":" in host else host
        return f"{self.settings.scheme}://{shown}:{self.settings.port}"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The relay's own listener: its own certificate, not checked against the address.
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(str(self.settings.sock), limit=0)
                if self.settings.sock is not None
                else aiohttp.TCPConnector(limit=0, ssl=False)
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def close(self) -> None:
        """Shutdown: close the bridge's websockets with 1001, then its client."""
        await asyncio.gather(
            *(
                ws.close(code=WS_GOING_AWAY, message=b"relay shutting down")
                for ws in self.websockets
            ),
            return_exceptions=True,
        )
        if self._session is not None:
            await self._session.close()

    def credentials(self) -> dict[str, str]:
        token = self.settings.token
        return {"Authorization": f"token {token}"} if token is not None else {}

    # --- /http_over_websocket ------------------------------------------------------------

    async def http_over_websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=FRAME_LIMIT, autoping=True, heartbeat=HEARTBEAT)
        await ws.prepare(request)
        problem = protocol.version_problem(request.query.get("min_version"))
        auth_url = request.query.get(AUTH_URL_PARAM)
        if (
            problem is None
            and auth_url
            and not _own_origin(auth_url, self.settings.scheme, request)
        ):
            problem = f"{AUTH_URL_PARAM} must be on this relay's own origin"
        if problem is not None:
            await ws.close(code=protocol.CLOSE_CODE, message=protocol.close_reason(problem))
            return ws
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        budget = Budget(BODY_BUDGET)
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def send(message: dict[str, Any]) -> None:
            async with lock:
                await ws.send_str(json.dumps(message))

        self.websockets.add(ws)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if len(msg.data) > MESSAGE_LIMIT:
                    mid = protocol.message_id_of(msg.data)
                    text = f"Message too large (over {MESSAGE_LIMIT} bytes)"
                    await send(protocol.error(mid, 400, text))
                    continue
                try:
                    inner = protocol.parse_request(msg.data)
                except protocol.BadMessage as bad:
                    await send(bad.answer)
                    continue
                # Backpressure: read on only when a slot and room for the body are free.
                size = len(inner.body or b"")
                await slots.acquire()
                await budget.take(size)
                task = asyncio.create_task(self._answer(inner, send))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(functools.partial(_free, slots, budget, size))
        finally:
            self.websockets.discard(ws)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ws

    async def _answer(self, inner: protocol.Request, send: Any) -> None:
        """Perform one inner request and send its answer; always one final `done`.

        The backend has `timeout` to start answering, and again for every piece of
        its body (a body may stream at its own pace, not stall); a client that reads
        slowly is backpressure, not a stall.
        """
        mid = inner.message_id
        url = URL(self.own_base + inner.path, encoded=True)
        headers = {**self.credentials(), "Accept-Encoding": "identity"}
        timeout = self.settings.backend_timeout + 5
        stage = "No answer"
        try:
            async with self.session().request(
                inner.method,
                url,
                data=inner.body,
                headers=headers,
                allow_redirects=False,
                skip_auto_headers=("Content-Type",),  # the protocol has no headers to send
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout),
            ) as resp:
                stage = "The body stalled: no more of it"
                head = protocol.joined_headers(list(resp.headers.items()))
                reason = resp.reason or ""
                # One chunk read ahead, to mark the last message `done`; if the body
                # breaks off, what was read still goes out before the error.
                pending = await _read_chunk(resp)
                ahead: bytes | None = None  # None: the read failed; b"": the end
                try:
                    ahead = await _read_chunk(resp)
                finally:
                    done = ahead == b""
                    await send(protocol.first(mid, resp.status, reason, head, pending, done))
                while ahead:
                    pending, ahead = ahead, None
                    try:
                        ahead = await _read_chunk(resp)
                    finally:
                        await send(protocol.chunk(mid, pending, ahead == b""))
        except TimeoutError:
            await _final_error(send, mid, 504, f"{stage} within {timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("http_over_websocket %s %s: %s", inner.method, inner.path, exc)
            await _final_error(send, mid, 502, f"The request failed: {exc}")

    # --- /http_over_websocket/diagnose -----------------------------------------------------

    async def diagnose(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        has_cookie = (
            auth.cookie_from_header(request.headers.get("Cookie"), self.settings.cookie_name)
            is not None
        )
        outdated = protocol.is_outdated(request.query.get("min_version"))
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                answer = protocol.diagnose(msg.data, has_cookie, outdated)
                await ws.send_str(json.dumps(answer))
        return ws

    # --- /http_over_websocket/proxied_ws/<path> ------------------------------------------------

    async def proxied_ws(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        path = raw_after(raw_path, PREFIX + "/proxied_ws")
        for secret in ("token", AUTH_URL_PARAM):  # the relay's token stays with the relay
            query = strip_query_param(query, secret)
        target = URL(self.own_base + path + (f"?{query}" if query else ""), encoded=True)
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        try:
            upstream = await self.session().ws_connect(
                target,
                protocols=offered,
                headers=self.credentials(),
                autoping=False,
                autoclose=False,
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            # The refusal keeps its status (a kernel that is gone stays a 404).
            status = exc.status if 400 <= exc.status < 600 else 502
            return error_response(
                request,
                status,
                f"The backend refused the websocket {path} with {exc.status}",
                "Websocket Refused",
            )
        except (aiohttp.ClientError, OSError) as exc:
            return error_response(
                request, 502, f"The websocket {path} could not be opened: {exc}", "Bad Gateway"
            )
        chosen = upstream.protocol
        client = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (), autoping=False, autoclose=False, max_msg_size=0
        )
        try:
            await client.prepare(request)
        except Exception:
            await upstream.close()
            raise
        self.websockets.add(client)
        try:
            await splice(client, upstream)
        finally:
            self.websockets.discard(client)
            if not upstream.closed:
                await upstream.close()
        return client

    def handlers(self) -> dict[str, Any]:
        """The handlers by the names `routes.TABLE` gives them."""
        return {
            "http_over_websocket": self.http_over_websocket,
            "diagnose": self.diagnose,
            "proxied_ws": self.proxied_ws,
        }


async def _read_chunk(resp: aiohttp.ClientResponse) -> bytes:
    """Up to CHUNK bytes of the body, as full as the stream allows; b"" at the end."""
    data = b""
    while len(data) < protocol.CHUNK:
        more = await resp.content.read(protocol.CHUNK - len(data))
        if not more:
            break
        data += more
    return data


async def _final_error(send: Any, mid: Any, status: int, text: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await send(protocol.error(mid, status, text))


def _free(slots: asyncio.Semaphore, budget: Budget, size: int, _: object) -> None:
    slots.release()
    budget.give(size)


def _own_origin(url: str, scheme: str, request: web.Request) -> bool:
    return auth.same_origin_url(url, scheme, request.host)


class Budget:
    """Bytes of request bodies in flight on one socket; `take` waits until they fit.

    One reader takes (the socket's read loop), the requests' ends give back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        # A body larger than the whole budget still goes, alone.
        while self.used and self.used + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()
