"""Fakes for driving the fast path without sockets (tests/test_fast_*.py).

A fake transport records what a protocol writes and whether it reads; a fake relay
routes every request to `FakeRelay.target` (None: the relay answers it, so it is
handed to a recording fallback, aiohttp's place); a fake backend opens "raw
connections" that are fake transports too, so a test plays the backend by feeding
bytes to the upstream protocol.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from yarl import URL

from jupyter_relay import gate
from jupyter_relay.backends.base import Upstream
from jupyter_relay.errors import BackendError
from jupyter_relay.fast.client import ClientConnection
from jupyter_relay.fast.server import FastServer

TOKEN = "fast-client-test-token"
KERNEL = "0f4a6c3e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default


class Fallback(asyncio.Protocol):
    """aiohttp's place: records the bytes it is handed."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


class FakeMixer:
    def __init__(self) -> None:
        self.kernel_owner: dict[str, str] = {}
        self.asked: list[str] = []
        self.answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def kernel_owner_of(self, kernel_id: str) -> str:
        self.asked.append(kernel_id)
        return await self.answer


BACKEND_TOKEN = "fake-backend-token-5d1e"


class FakeBackend:
    """A backend at http://127.0.0.1:9/base/ whose raw connections are fake transports."""

    name = "fake"

    def __init__(self) -> None:
        self.opened: list[tuple[FakeTransport, asyncio.Protocol]] = []

    async def _open(self, factory: Any) -> tuple[asyncio.Transport, asyncio.Protocol]:
        protocol = factory()
        transport = FakeTransport()
        protocol.connection_made(transport)
        self.opened.append((transport, protocol))
        return transport, protocol

    def upstream(self) -> Upstream:
        return Upstream(
            base_url=URL("http://127.0.0.1:9/base/"),
            session=cast(Any, None),
            credentials=(("Authorization", f"token {BACKEND_TOKEN}"),),
            server_hostname=None,
            secrets=(BACKEND_TOKEN.encode(),),
            open_raw=self._open,
            host_header="127.0.0.1:9",
        )

    def explain(self, error: BackendError) -> BackendError:
        return error

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        return None


class FakeRelay:
    """Routes every request to `target` (None: the relay answers it); knows no kernel's owner."""

    def __init__(self) -> None:
        self.policy = gate.Policy(token=TOKEN, cookie_name="c", allowed_hosts=None)
        self.cookie_name = "c"
        self.mixer = FakeMixer()
        self.target: FakeBackend | None = None
        self.config = SimpleNamespace(backend_timeout=60.0)

    def route(self, path: str, raw_path: str) -> FakeBackend | None:
        return self.target

    def unknown_kernel(self, path: str) -> str | None:
        channels = f"/api/kernels/{KERNEL}/channels"
        return KERNEL if path == channels and KERNEL not in self.mixer.kernel_owner else None


class Harness:
    def __init__(self, target: FakeBackend | None = None) -> None:
        self.relay = FakeRelay()
        self.relay.target = target
        self.fallbacks: list[Fallback] = []
        self.server = FastServer(cast(Any, self.relay), self._fallback)
        self.transport = FakeTransport()
        self.conn = ClientConnection(self.server)
        self.conn.connection_made(self.transport)

    def _fallback(self) -> asyncio.Protocol:
        self.fallbacks.append(Fallback())
        return self.fallbacks[-1]

    def send(self, data: bytes) -> None:
        proto = self.transport.protocol
        if proto is None:
            self.conn.data_received(data)
        else:
            cast(asyncio.Protocol, proto).data_received(data)

    @property
    def handed(self) -> bytes:
        return bytes(self.fallbacks[0].received) if self.fallbacks else b""


def request(path: str = "/api/status", *, token: bool = True, extra: str = "") -> bytes:
    auth = f"Authorization: token {TOKEN}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n{auth}{extra}\r\n".encode()
