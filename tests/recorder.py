"""A raw HTTP backend that records every request head it is sent, whatever its path.

The echo app records only its routes; the gate's tests need to know that *nothing*
arrived. Answers: `/hang` never (it waits for the relay to close), an upgrade a
404 (reading on until the relay closes), anything else a page with the backend's
token and login cookie, as jupyter_server's pages have. The relay's own health
checks are not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .waiting import eventually

BACKEND_TOKEN = "recorder-backend-token-7f3a9c"
LOGIN_COOKIE = "username-127-0-0-1-1"


@dataclass
class Recorder:
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    busy: int = 0  # connections open that have carried a recorded head
    released: asyncio.Event = field(default_factory=asyncio.Event)  # a /hang was let go

    @property
    def backend_arg(self) -> str:
        return f"rec=http://127.0.0.1:{self.port}/?token={BACKEND_TOKEN}"

    def paths(self) -> list[str]:
        return [h.split(b" ", 2)[1].decode("latin-1") for h in self.heads]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        recorded = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not _own_probe(head):
                    self.heads.append(head)
                    if not recorded:
                        recorded, self.busy = True, self.busy + 1
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                if head.split(b" ", 2)[1].startswith(b"/hang"):
                    await reader.read()  # until the relay closes the connection
                    self.released.set()
                    return
                if re.search(rb"(?im)^upgrade:\s*websocket", head):
                    # Closing, but reading on until the relay closes: whatever it sent after
                    # the handshake (a pipelined request, say) is still recorded.
                    writer.write(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                        b"Connection: close\r\n\r\nno socket"
                    )
                else:
                    body = f'<html><script>{{"token": "{BACKEND_TOKEN}"}}</script></html>'
                    writer.write(
                        (
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                            f"Set-Cookie: {LOGIN_COOKIE}=secret-login; Path=/; HttpOnly\r\n"
                            "Set-Cookie: _xsrf=2|abc; Path=/\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n{body}"
                        ).encode()
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.busy -= recorded
            writer.close()

    async def settled(self, bound: float = 5) -> None:
        """Until the relay has closed every connection it forwarded on: all it sent is here."""
        await eventually(
            lambda: not self.busy,
            timeout=bound,
            interval=0.01,
            what="every connection the relay forwarded on closed",
        )


def _own_probe(head: bytes) -> bool:
    """The relay's health check (`/api/status`, sent by it, not forwarded for a client)."""
    return head.startswith(b"GET /api/status ") and b"x-forwarded-for" not in head.lower()


@contextlib.asynccontextmanager
async def run_recorder() -> AsyncIterator[Recorder]:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0, limit=1 << 20)
    recorder.port = server.sockets[0].getsockname()[1]
    try:
        yield recorder
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
