"""A small real HTTP/websocket server that reports what reached it."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

BACKEND_TOKEN = "echo-backend-token-42"


@dataclass
class Echo:
    port: int
    requests: list[dict[str, object]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    # /stream-page sends its second half only once this is set (by a client that saw the first).
    page_more: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def backend_arg(self) -> str:
        return f"echo=http://127.0.0.1:{self.port}/?token={BACKEND_TOKEN}"


def make_echo_app(echo: Echo) -> web.Application:
    async def record(request: web.Request) -> dict[str, object]:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        info: dict[str, object] = {
            "peer_port": peer[1] if peer else None,
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": list(request.headers.items()),
            "size": size,
            "sha256": digest.hexdigest(),
        }
        echo.requests.append(info)
        return info

    async def echo_handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(await record(request))

    async def gzip_handler(request: web.Request) -> web.StreamResponse:
        body = gzip.compress(b"compressed body " * 100)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    async def redirect(request: web.Request) -> web.StreamResponse:
        # Set the header as is: HTTPFound would normalise %2F away.
        location = f"http://127.0.0.1:{echo.port}/landed?x=%2F"
        return web.Response(status=302, headers={"Location": location})

    async def cookie(request: web.Request) -> web.StreamResponse:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "a=1; Path=/base/; Domain=127.0.0.1")
        resp.headers.add("Set-Cookie", "b=2; Path=/")
        return resp

    async def status(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        return web.Response(status=code, headers={"ETag": '"v1"', "X-Status": str(code)})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"part {i}\n".encode())
            await asyncio.sleep(0.01)  # parts apart in time: a stream, not one write
        await resp.write_eof()
        return resp

    async def page(request: web.Request) -> web.StreamResponse:
        html = f'<html><script>{{"token": "{BACKEND_TOKEN}"}}</script></html>'
        return web.Response(text=html, content_type="text/html")

    async def stream_page(request: web.Request) -> web.StreamResponse:
        """A page that streams (as a report or an event stream does), its token split
        across its two halves; the second waits for `echo.page_more`."""
        echo.page_more.clear()
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        if request.query.get("length"):
            resp.content_length = int(request.query["length"])
        await resp.prepare(request)
        half = len(BACKEND_TOKEN) // 2
        await resp.write(f"<p>first half, then {BACKEND_TOKEN[:half]}".encode())
        await asyncio.wait_for(echo.page_more.wait(), 30)
        await resp.write(f"{BACKEND_TOKEN[half:]} second half</p>".encode())
        await resp.write_eof()
        return resp

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        await record(request)
        ws = web.WebSocketResponse(
            protocols=("v1.kernel.websocket.jupyter.org", "chosen"), max_msg_size=0
        )
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    _, code, reason = msg.data.split(":", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    break
                if msg.data.startswith("big:"):
                    await ws.send_bytes(b"x" * int(msg.data[4:]))
                    continue
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        echo.close_codes.append(ws.close_code)
        return ws

    async def slow(request: web.Request) -> web.StreamResponse:
        (await record(request))["arrived"] = asyncio.get_running_loop().time()
        await asyncio.sleep(float(request.query.get("s", "1")))  # a slow backend, on purpose
        return web.Response(text="finally")

    async def flood(request: web.Request) -> web.StreamResponse:
        """Send `n` binary messages of 1 MiB as fast as the peer takes them."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        block = b"\xab" * (1 << 20)
        for i in range(int(request.query.get("n", "300"))):
            await ws.send_bytes(i.to_bytes(4, "big") + block)
        await ws.close()
        return ws

    async def sink(request: web.Request) -> web.StreamResponse:
        """Read nothing for a while, then count what arrives; answer with the count."""
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await asyncio.sleep(float(request.query.get("wait", "3")))  # a stalled reader, on purpose
        count = 0
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == "done":
                await ws.send_str(str(count))
            elif msg.type is WSMsgType.BINARY:
                assert int.from_bytes(msg.data[:4], "big") == count
                count += 1
        return ws

    app = web.Application(client_max_size=0)
    app.router.add_get("/sink", sink)
    app.router.add_get("/flood", flood)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/echo/{tail:.*}", echo_handler)
    app.router.add_get("/gzip", gzip_handler)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/cookie", cookie)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/page", page)
    app.router.add_get("/stream-page", stream_page)
    app.router.add_get("/ws", ws_handler)
    return app


@asynccontextmanager
async def run_echo() -> AsyncIterator[Echo]:
    echo = Echo(port=0)
    runner = web.AppRunner(make_echo_app(echo))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    echo.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield echo
    finally:
        await runner.cleanup()
