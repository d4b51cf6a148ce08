"""Fakes for driving the engine without sockets (tests/test_fast_*.py).

A fake transport records what a protocol writes and whether it reads; a fake relay
routes every request to `FakeRelay.target` (None: the relay answers it, so it goes
to the fake house, aiohttp's place) and a kernel's websocket to its owner once a
fake mixer has said who that is; a fake backend opens "raw connections" that are
fake transports too, so a test plays the backend by feeding bytes to the upstream
protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from yarl import URL

from jupyter_relay import gate
from jupyter_relay.backends.base import Upstream
from jupyter_relay.errors import BackendError
from jupyter_relay.fast.client import ClientConnection
from jupyter_relay.fast.server import FastServer
from jupyter_relay.metrics import Meter
from jupyter_relay.routes import Forward, Later, Road

TOKEN = "fast-client-test-token"
KERNEL = "0f4a6c3e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
ORIGIN = "https://colab.research.google.com"  # the fake relay's --allow-origin


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


class FakeClock:
    """The loop's clock and timers for the engine, moved by hand; tasks run on the real loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, asyncio.TimerHandle]] = []
        self.real = asyncio.get_running_loop()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(self.now + delay, callback, args, self.real)
        self.timers.append((self.now + delay, handle))
        return handle

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        return self.real.create_task(coro)

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer that falls due, in order."""
        self.now += seconds
        due = sorted((t for t in self.timers if t[0] <= self.now), key=lambda t: t[0])
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, handle in due:
            if not handle.cancelled():
                handle._run()


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

    def __init__(
        self,
        name: str = "fake",
        *,
        verbatim: bool = False,
        veto: BackendError | None = None,
        vetoes: Any = None,
    ) -> None:
        self.name = name
        self.verbatim = verbatim  # the house: heads pass as they are
        self.vetoes = vetoes  # Upstream.vetoes: which answers `answered` is asked about
        self.veto = veto  # what `answered` says of them
        self.asked: list[tuple[int, str | None]] = []
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
            verbatim=self.verbatim,
            vetoes=self.vetoes,
        )

    def explain(self, error: BackendError) -> BackendError:
        return error

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        self.asked.append((status, location))
        return self.veto


class FakeRelay:
    """Routes every request to `target` (None: to the house); a kernel's websocket to its
    owner, which the fake mixer is asked for while unknown."""

    def __init__(self) -> None:
        self.policy = gate.Policy(
            token=TOKEN, cookie_name="c", allow_origins=(ORIGIN,), allowed_hosts=None
        )
        self.cookie_name = "c"
        self.scheme = "http"
        self.backend_timeout = 60.0
        self.mixer = FakeMixer()
        self.target: FakeBackend | None = None
        self.owners: dict[str, FakeBackend] = {}
        self.house_backend = FakeBackend("relay", verbatim=True)
        self.house = Forward(self.house_backend, Road.HOUSE)
        self.meter = Meter()

    def route(self, path: str, raw_path: str, query: str, method: str) -> Forward | Later:
        if path == f"/api/kernels/{KERNEL}/channels":
            owner = self.mixer.kernel_owner.get(KERNEL)
            if owner is None:
                return self._owner
            return Forward(self.owners.setdefault(owner, FakeBackend(owner)), Road.KERNEL)
        return Forward(self.target, Road.PRIMARY) if self.target is not None else self.house

    async def _owner(self) -> Forward:
        owner = await self.mixer.kernel_owner_of(KERNEL)
        return Forward(self.owners.setdefault(owner, FakeBackend(owner)), Road.KERNEL)


class Harness:
    def __init__(self, target: FakeBackend | None = None) -> None:
        self.relay = FakeRelay()
        self.relay.target = target
        self.server = FastServer(self.relay)
        self.transport = FakeTransport()
        self.conn = ClientConnection(self.server)
        self.clock = FakeClock()
        self.conn.loop = cast(asyncio.AbstractEventLoop, self.clock)
        self.conn.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    @property
    def handed(self) -> bytes:
        """What the house was sent, on all its connections."""
        return b"".join(bytes(t.written) for t, _ in self.relay.house_backend.opened)


def request(path: str = "/api/status", *, token: bool = True, extra: str = "") -> bytes:
    auth = f"Authorization: token {TOKEN}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n{auth}{extra}\r\n".encode()
