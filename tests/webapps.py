"""Real web apps for the port proxy's tests: an aiohttp app, and a listener that counts.

`make_app` builds one aiohttp application whose routes are chosen by the LAST segment
of the path, whatever comes before it, so the same app answers behind a relative prefix
(`/proxy/8050/_sse`), behind an absolute one (`/proxy/absolute/8050/_sse`) and directly:

    <anything else>   echo: JSON of method, raw path, raw query, headers, body size/sha256, peer
    .../_ws           websocket: picks "chosen.v2" or "other.v3" if offered (the first of
                      those in the client's order); text echoed as text, binary as binary;
                      "close:<code>" closes with that code; "info" answers JSON about the
                      handshake. `?deflate=11` answers permessage-deflate with
                      client_max_window_bits=11 (an answer only the app gives),
                      `?deflate=off` declines compression.
    .../_sse          text/event-stream: `?n=` events `?gap=` seconds apart, each with the
                      time.time() it was sent
    .../_download     `?size=` bytes of `pattern_block`s, streamed, with Content-Length
    .../_redirect     `?location=` as the Location header as is, `?status=` (302)
    .../_env          `?name=`: that environment variable of the app's process
    .../_upload       reads the body chunk by chunk; in-process, `WebApp.first_chunk` is set
                      as soon as one arrived
    .../_slow         answers after `?s=` seconds
    .../_cookie       each `?set=` as one Set-Cookie header, as is
    .../_page         an HTML page that loads `_page.css` and `_page.js` by relative URLs;
                      the script opens the websocket `_ws` (relative too, offering
                      "chosen.v2"), sends a text and writes the echo and the chosen
                      subprotocol into `#status`

Run it as a program (`python tests/webapps.py --port P [--host H]`; it imports nothing
from the tests) or in-process with `run_webapp`. `CountingListener` is a plain TCP socket
on 127.0.0.1 and ::1 that counts the connections it accepts, for the tests that must
prove nothing was contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, hdrs, web

CHUNK = 1024 * 1024
PROTOCOLS = ("chosen.v2", "other.v3")
DEFLATE_BITS = 11
# One MiB of fixed pseudo-random bytes; block i is i (8 bytes) and the rest of this.
_BASE = random.Random(20240601).randbytes(CHUNK)


PAGE = """<!doctype html>
<html><head><title>webapps page</title>
<link rel="stylesheet" href="_page.css"><script src="_page.js" defer></script>
</head><body><p id="status">waiting for the script</p></body></html>
"""
PAGE_CSS = "#status { color: rgb(1, 2, 3); }\n"
PAGE_JS = """
const status = document.getElementById("status");
const address = new URL("_ws", location.href);
address.protocol = location.protocol === "https:" ? "wss:" : "ws:";
address.search = "";
const ws = new WebSocket(address.href, ["chosen.v2"]);
ws.onopen = () => { status.textContent = "open"; ws.send("hello from the page"); };
ws.onmessage = (event) => { status.textContent = `echo: ${event.data} (${ws.protocol})`; };
ws.onerror = () => { status.textContent = "websocket error"; };
"""


def pattern_block(index: int) -> bytes:
    return index.to_bytes(8, "big") + _BASE[8:]


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes of the download's content, block by block."""
    index = 0
    while size > 0:
        block = pattern_block(index)[:size]
        size -= len(block)
        index += 1
        yield block


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in pattern(size):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class WebApp:
    """What an in-process app saw; `port` once it listens."""

    port: int = 0
    host: str = "127.0.0.1"
    requests: list[dict[str, Any]] = field(default_factory=list)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    sse_sent: list[float] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]


def _info(request: web.Request) -> dict[str, Any]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    raw = request.raw_path
    path, _, query = raw.partition("?")
    return {
        "method": request.method,
        "path": path,
        "query": query,
        "headers": [[k, v] for k, v in request.headers.items()],
        "peer": [peer[0], peer[1]] if peer else None,
        "pid": os.getpid(),
    }


class _DeflateAnswer(web.WebSocketResponse):
    """Answers permessage-deflate with a window size for the client's compressor.

    A client that offers `client_max_window_bits` lets the server pick that size
    (RFC 7692 7.1.2.2); aiohttp's server never does, so an aiohttp client that ends
    up with `compress == DEFLATE_BITS` got this app's answer, not a proxy's own.
    """

    def _handshake(self, request: web.BaseRequest) -> tuple[Any, str | None, int, bool]:
        headers, protocol, compress, notakeover = super()._handshake(request)
        if compress:
            headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = (
                f"permessage-deflate; client_max_window_bits={DEFLATE_BITS}"
            )
        return headers, protocol, compress, notakeover


def make_app(state: WebApp | None = None) -> web.Application:
    seen = state if state is not None else WebApp()

    async def echo(request: web.Request) -> web.StreamResponse:
        info = _info(request)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        info["size"] = size
        info["sha256"] = digest.hexdigest()
        seen.requests.append(info)
        return web.json_response(info)

    async def upload(request: web.Request) -> web.StreamResponse:
        info = _info(request)
        seen.requests.append(info)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            if chunk:
                seen.first_chunk.set()
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({**info, "size": size, "sha256": digest.hexdigest()})

    async def websocket(request: web.Request) -> web.StreamResponse:
        info = _info(request)
        seen.requests.append(info)
        deflate = request.query.get("deflate", "")
        ws: web.WebSocketResponse
        if deflate == str(DEFLATE_BITS):
            ws = _DeflateAnswer(protocols=PROTOCOLS, max_msg_size=0)
        else:
            ws = web.WebSocketResponse(
                protocols=PROTOCOLS, max_msg_size=0, compress=deflate != "off"
            )
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"asked to close")
                    break
                if msg.data == "info":
                    answer = {
                        **info,
                        "protocol": ws.ws_protocol,
                        "compress": ws.compress,
                        "extensions": ws.headers.get(hdrs.SEC_WEBSOCKET_EXTENSIONS),
                    }
                    await ws.send_str(json.dumps(answer))
                    continue
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def sse(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        count = int(request.query.get("n", "5"))
        gap = float(request.query.get("gap", "0.3"))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for index in range(count):
            if index:
                await asyncio.sleep(gap)  # events apart in time: what the SSE tests time
            sent = time.time()
            seen.sse_sent.append(sent)
            await resp.write(f"data: {json.dumps({'i': index, 'sent': sent})}\n\n".encode())
        await resp.write_eof()
        return resp

    async def download(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        size = int(request.query["size"])
        resp = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        )
        await resp.prepare(request)
        for block in pattern(size):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async def redirect(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        status = int(request.query.get("status", "302"))
        # Set as is: aiohttp's HTTPFound would normalise the URL.
        return web.Response(status=status, headers={"Location": request.query["location"]})

    async def env(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        return web.json_response({"value": os.environ.get(request.query["name"])})

    async def cookie(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        resp = web.Response(text="cookies")
        for value in request.query.getall("set", []):
            resp.headers.add("Set-Cookie", value)  # as is: not through aiohttp's cookie jar
        return resp

    async def page(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        return web.Response(text=PAGE, content_type="text/html")

    async def page_js(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        return web.Response(text=PAGE_JS, content_type="text/javascript")

    async def page_css(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        return web.Response(text=PAGE_CSS, content_type="text/css")

    async def slow(request: web.Request) -> web.StreamResponse:
        seen.requests.append(_info(request))
        await asyncio.sleep(float(request.query.get("s", "5")))  # a slow app, on purpose
        return web.Response(text="finally")

    routes = {
        "_ws": websocket,
        "_sse": sse,
        "_download": download,
        "_redirect": redirect,
        "_env": env,
        "_upload": upload,
        "_slow": slow,
        "_cookie": cookie,
        "_page": page,
        "_page.js": page_js,
        "_page.css": page_css,
    }

    async def dispatch(request: web.Request) -> web.StreamResponse:
        last = request.raw_path.partition("?")[0].rstrip("/").rpartition("/")[2]
        handler = routes.get(last, echo)
        return await handler(request)

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


@contextlib.asynccontextmanager
async def run_webapp(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[WebApp]:
    """The app in this process's loop, listening on `host` (a free port unless given)."""
    state = WebApp(host=host)
    runner = web.AppRunner(make_app(state), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    state.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        await runner.cleanup()


class CountingListener:
    """A TCP port on 127.0.0.1 (and ::1, same port) that counts the connections it accepts.

    Each connection is read for a moment (what was sent is kept, for failure messages)
    and closed without an answer. Runs in threads: works under any event loop.
    """

    def __init__(self) -> None:
        self.count = 0
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        self.port: int = v4.getsockname()[1]
        self._sockets.append(v4)
        with contextlib.suppress(OSError):
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::1", self.port))
            except OSError:
                v6.close()
                raise
            self._sockets.append(v6)
        for sock in self._sockets:
            sock.listen(64)
            sock.settimeout(0.05)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.count += 1
            with conn:
                conn.settimeout(0.3)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(2048)
                with self._lock:
                    self.received.append(data)

    def __enter__(self) -> CountingListener:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()

    async def settled(self, wait: float = 0.3) -> int:
        """The count after giving a connection in flight `wait` seconds to arrive.

        For absences only (`== 0` after refused requests): a request the relay refused
        leaves nothing to wait on, so time is the measure. A connection that should
        arrive is awaited on `count` instead (tests/waiting.py's `eventually`).
        """
        await asyncio.sleep(wait)
        with self._lock:
            return self.count

    def __repr__(self) -> str:
        return f"CountingListener(port={self.port}, count={self.count}, got={self.received!r})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a web app for the port proxy's tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    print(f"webapps: pid {os.getpid()} listening on {args.host}:{args.port}", flush=True)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
