"""The fast path's client connection, driven byte by byte without sockets.

A fake transport records what the connection writes and whether it reads; a fake
relay routes nothing, so every request that passes the gate or not is handed to
a recording fallback (aiohttp's place). What is checked is the connection's own
state machine: framing, hand-off with every byte, refusals, and waiting for a
kernel's owner with reading paused.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from jupyter_relay import gate
from jupyter_relay.errors import NotFound
from jupyter_relay.fast.client import ClientConnection
from jupyter_relay.fast.head import HEAD_LIMIT
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


class FakeRelay:
    """Routes nothing (the relay answers everything itself), knows no kernel's owner."""

    def __init__(self) -> None:
        self.policy = gate.Policy(token=TOKEN, cookie_name="c", allowed_hosts=None)
        self.cookie_name = "c"
        self.mixer = FakeMixer()

    def route(self, path: str, raw_path: str) -> None:
        return None

    def unknown_kernel(self, path: str) -> str | None:
        channels = f"/api/kernels/{KERNEL}/channels"
        return KERNEL if path == channels and KERNEL not in self.mixer.kernel_owner else None


class Harness:
    def __init__(self) -> None:
        self.relay = FakeRelay()
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


async def test_a_head_in_pieces_is_handed_on_once_whole() -> None:
    h = Harness()
    data = request(token=False)
    for i in range(len(data) - 1):
        h.send(data[i : i + 1])
        assert h.fallbacks == []  # nothing decided before the blank line
    h.send(data[-1:])
    assert h.handed == data
    assert h.transport.protocol is h.fallbacks[0]
    assert h.transport.written == b""  # aiohttp answers, not the fast path


async def test_what_follows_a_handed_on_request_goes_with_it() -> None:
    h = Harness()
    first, second = request(token=False), request("/api/kernels")
    h.send(first + second[:10])
    h.send(second[10:])
    assert h.handed == first + second


async def test_a_head_over_the_limit_is_431_and_closed() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT)
    assert h.transport.written.startswith(b"HTTP/1.1 431 ")
    assert h.transport.closed
    assert h.fallbacks == []


@pytest.mark.parametrize("found", [False, True])
async def test_a_kernel_websocket_waits_for_its_owner_with_reading_paused(found: bool) -> None:
    h = Harness()
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    upgrade += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    head = request(f"/api/kernels/{KERNEL}/channels", extra=upgrade)
    h.send(head)
    assert h.conn.asking is not None  # the mixer is being asked
    assert not h.transport.reading
    assert h.fallbacks == []
    h.send(b"early bytes")  # already in flight: kept, in order
    assert h.fallbacks == []
    if found:
        h.relay.mixer.kernel_owner[KERNEL] = "b"  # as kernel_owner_of leaves it
        h.relay.mixer.answer.set_result("b")
    else:
        h.relay.mixer.answer.set_exception(NotFound(f"Kernel does not exist: {KERNEL}"))
    assert h.conn.asking is not None
    await h.conn.asking
    # This fake relay routes nothing even once the owner is known: aiohttp gets it all,
    # and the mixer was asked once.
    assert h.handed == head + b"early bytes"
    assert h.relay.mixer.asked == [KERNEL]
    assert h.transport.reading
