"""Where a port-proxy request goes: a `Target` the forwarder and the fast path use as a backend.

A target is one prefix (`/proxy/8050`, `/proxy/absolute/gpu:6006`, `/apps/tb`)
and how to dial its app: TCP to addresses already checked against the
allowlist, or a channel of an `ssh` backend's connection. Its `Upstream`
carries the prefix to take off and the context headers, so the forwarding
code that serves backends serves apps unchanged: streaming, backpressure,
websockets spliced with the app's own handshake answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from yarl import URL

from ..backends.base import Backend, RawOpener, Upstream
from ..backends.tcp import OpenerConnector
from ..errors import BackendError, BackendTimeout, BackendUnreachable
from .paths import context_headers

ProtocolFactory = Callable[[], asyncio.Protocol]


class ProxyTarget:
    """One prefix of the port proxy, with its connection pool."""

    def __init__(
        self,
        name: str,
        label: str,
        *,
        opener: RawOpener,
        host_header: str,
        prefix: str,
        relative: bool,
        origins: Sequence[str] = (),
        via: Backend | None = None,
    ) -> None:
        self._name = name
        self.label = label  # "localhost:8050", "port 6006 of backend 'gpu'", "app 'tb'"
        self.via = via
        self.active = 0
        self.retired = False
        self._closing: asyncio.Future[None] | None = None
        connector = OpenerConnector(opener, limit=0, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",),
        )
        self._upstream = Upstream(
            base_url=URL(f"http://{host_header}/"),
            session=self.session,
            credentials=context_headers(prefix) if relative else (),
            server_hostname=None,
            secrets=(),
            origins=frozenset(
                str(URL(o).origin()).lower() for o in (f"http://{host_header}", *origins)
            ),
            open_raw=opener,
            host_header=host_header,
            strip_prefix=prefix if relative else "",
            location_prefix=prefix if relative else "",
            cookie_scope=prefix,
        )

    @property
    def name(self) -> str:
        return self._name

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[ProxyTarget]:
        """Use the target's session; a target retired meanwhile closes it when the last leaves."""
        self.active += 1
        try:
            yield self
        finally:
            self.active -= 1
            if self.retired and self.active == 0:
                await self.close()

    def retire(self) -> None:
        """Dropped from the cache: close now if unused, else when the last user leaves."""
        self.retired = True
        if self.active == 0:
            self._closing = asyncio.ensure_future(self.close())

    def upstream(self) -> Upstream:
        if self.via is not None:
            self.via.upstream()  # raises while the backend's connection is down
        return self._upstream

    def explain(self, error: BackendError) -> BackendError:
        """Say what failed in terms of the app, not of a backend."""
        if isinstance(error, BackendTimeout):
            return BackendTimeout(
                error.backend,
                f"{self.label} did not answer in time (--backend-timeout); "
                "the app may be busy or hung",
                error.detail,
            )
        if isinstance(error, BackendUnreachable) and error.backend == self._name:
            return BackendUnreachable(
                error.backend,
                f"nothing answers at {self.label} ({error.detail}); "
                "is the app running and listening on that port?",
                error.detail,
            )
        return error

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        return None

    async def close(self) -> None:
        await self.session.close()


def tcp_opener(addresses: Callable[[], Sequence[str]], port: int, timeout: float) -> RawOpener:
    """Dial `port` on each address in turn (they were checked); the first that answers wins."""

    async def open_raw(factory: ProtocolFactory) -> tuple[asyncio.Transport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        failure: OSError = ConnectionRefusedError(errno.ECONNREFUSED, "no address to dial")
        for address in addresses():
            try:
                async with asyncio.timeout(timeout):
                    transport, protocol = await loop.create_connection(factory, address, port)
                return transport, protocol
            except TimeoutError:
                failure = TimeoutError(f"connecting to {address}:{port} timed out")
            except OSError as exc:
                failure = exc
        raise failure

    return open_raw


ChannelOpener = Callable[
    [str, int, ProtocolFactory], Awaitable[tuple[asyncio.Transport, asyncio.Protocol]]
]


def ssh_opener(open_channel: ChannelOpener, port: int) -> RawOpener:
    """Dial `localhost:port` on an ssh backend's machine, through its connection."""

    async def open_raw(factory: ProtocolFactory) -> tuple[asyncio.Transport, asyncio.Protocol]:
        return await open_channel("localhost", port, factory)

    return open_raw
