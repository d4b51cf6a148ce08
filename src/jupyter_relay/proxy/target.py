"""Where a port-proxy request goes: a `Target` the engine forwards to as to a backend.

A target is one prefix (`/proxy/8050`, `/proxy/absolute/gpu:6006`, `/apps/tb`)
and how to dial its app: TCP to addresses already checked against the
allowlist, or a channel of an `ssh` backend's connection. Its `Upstream`
carries the prefix to take off and the context headers, so the engine serves
apps as it serves backends: streaming, backpressure, websockets spliced with
the app's own handshake answer. Its connections are the engine's (a pool per
prefix), so a target holds nothing to close.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Sequence

from yarl import URL

from ..backends.base import Backend, RawOpener, Upstream
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
        self._upstream = Upstream(
            base_url=URL(f"http://{host_header}/"),
            open_raw=opener,
            session=None,
            credentials=context_headers(prefix) if relative else (),
            server_hostname=None,
            secrets=(),
            origins=frozenset(
                str(URL(o).origin()).lower() for o in (f"http://{host_header}", *origins)
            ),
            host_header=host_header,
            strip_prefix=prefix if relative else "",
            location_prefix=prefix if relative else "",
            cookie_scope=prefix,
        )

    @property
    def name(self) -> str:
        return self._name

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
