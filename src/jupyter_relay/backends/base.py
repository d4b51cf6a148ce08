"""What every backend kind offers the relay, and the HTTP plumbing they share.

A backend, once started, hands out an `Upstream`: the base URL to send
requests to, the aiohttp session (connection pool, TLS context) to send them
with, and the credentials to add. The forwarder knows nothing else about it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from yarl import URL

from ..credentials import Secret
from ..errors import BackendAuthError, BackendError, BackendTLSError, BackendUnreachable
from ..logs import add_secret
from ..specs import BackendSpec, TlsSettings
from ..translate import translate_client_error
from .tcp import OpenerConnector, QuickAckConnector

Progress = Callable[[str], None]
RawOpener = Callable[
    [Callable[[], asyncio.Protocol]], Awaitable[tuple[asyncio.Transport, asyncio.Protocol]]
]


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    response: float = 120.0
    start: float = 60.0


@dataclass(frozen=True)
class Upstream:
    """How to reach a backend over HTTP right now."""

    base_url: URL  # scheme://host:port/base/ (base ends with /)
    # Open a raw connection to the backend: the engine forwards every request on these.
    open_raw: RawOpener
    # For the relay's own calls to the backend (the mixer, health checks); None for a
    # target only the engine speaks to (the port proxy's apps, the relay's own answers).
    session: aiohttp.ClientSession | None
    credentials: tuple[tuple[str, str], ...]
    server_hostname: str | None
    # Values a backend may print into its pages (its token): scrubbed from HTML.
    secrets: tuple[bytes, ...]
    origins: frozenset[str] = field(default_factory=frozenset)
    host_header: str = ""
    # The port proxy's relative mode: the relay path's prefix, taken off on the way
    # up and put back in front of the redirects that come down.
    strip_prefix: str = ""
    location_prefix: str = ""
    # A port-proxy app's prefix: its cookies are kept under it ("" for a backend).
    cookie_scope: str = ""
    # A backend that may veto an answer (a hub saying its server is gone): for an answer
    # this returns True for, the engine awaits `Target.answered` before passing it on.
    vetoes: Callable[[int, str | None], bool] | None = None
    # The relay's own answers: request and answer heads pass as they are.
    verbatim: bool = False

    @property
    def client(self) -> aiohttp.ClientSession:
        """The session for the relay's own calls to this backend."""
        if self.session is None:
            raise RuntimeError(f"no HTTP client for {self.base_url}")
        return self.session

    @property
    def origin(self) -> str:
        return str(self.base_url.origin())


@dataclass(frozen=True)
class HealthResult:
    reachable: bool
    latency_ms: float | None
    checked_at: float
    error: str | None = None


class Target(Protocol):
    """What the forwarder needs of where a request goes: a backend, or a port-proxy target."""

    @property
    def name(self) -> str: ...

    def upstream(self) -> Upstream: ...

    def explain(self, error: BackendError) -> BackendError: ...

    async def answered(self, status: int, location: str | None) -> BackendError | None: ...


class Backend(Target, Protocol):
    spec: BackendSpec
    last_health: HealthResult | None

    @property
    def name(self) -> str: ...

    async def start(self, progress: Progress) -> None: ...

    async def stop(self) -> None: ...

    def upstream(self) -> Upstream: ...

    async def check(self) -> HealthResult: ...

    def describe(self) -> dict[str, Any]: ...

    def explain(self, error: BackendError) -> BackendError: ...

    async def answered(self, status: int, location: str | None) -> BackendError | None: ...


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """System trust store plus the extra CA file, and the client certificate."""
    ctx = ssl.create_default_context()
    if tls.ca_cert is not None:
        ctx.load_verify_locations(cafile=str(tls.ca_cert))
    if tls.client_cert is not None:
        ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key) if tls.client_key else None)
    return ctx


class HttpBackend:
    """Common base of backends reached over plain HTTP(S)."""

    kind = "jupyter"
    # What the health check asks: an authenticated endpoint every server of the kind has.
    check_path = "api/status"

    def __init__(self, spec: BackendSpec, timeouts: Timeouts) -> None:
        self.spec = spec
        self.timeouts = timeouts
        self.last_health: HealthResult | None = None
        self._session: aiohttp.ClientSession | None = None
        self._upstream: Upstream | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def _open(self, base_url: URL, token: Secret | None, opener: RawOpener | None = None) -> None:
        """Create the session for `base_url`; called once the address is known.

        With `opener`, every connection (aiohttp's and the fast path's) comes from it,
        plain HTTP only: `base_url` then names the server as the opener's far end sees it.
        """
        ssl_ctx: ssl.SSLContext | bool = False
        if base_url.scheme == "https":
            try:
                ssl_ctx = tls_context(self.spec.tls)
            except (OSError, ssl.SSLError) as exc:
                raise BackendError(
                    self.name, f"backend '{self.name}': cannot load TLS files: {exc}"
                ) from exc
        connector: aiohttp.BaseConnector
        if opener is not None:
            assert not ssl_ctx, "an opener's connections carry plain HTTP"
            connector = OpenerConnector(opener, limit=0, limit_per_host=0, keepalive_timeout=60)
        else:
            connector = QuickAckConnector(
                ssl=ssl_ctx,
                limit=0,
                limit_per_host=0,
                keepalive_timeout=60,
                enable_cleanup_closed=False,
            )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeouts.connect, connect=None
            ),
            skip_auto_headers=("User-Agent",),
        )
        credentials = [(k, v) for k, v in self.spec.headers]
        secrets: tuple[bytes, ...] = ()
        if token:
            assert token is not None
            credentials.append(("Authorization", f"token {token.value}"))
            secrets = (token.value.encode(),)
            add_secret(token.value)  # whenever it is learnt: at start, or on a reconnect
        origins = {str(base_url.origin()).lower()}
        if base_url.host in ("127.0.0.1", "localhost", "::1"):
            port = base_url.port
            origins |= {f"{base_url.scheme}://{h}:{port}" for h in ("127.0.0.1", "localhost")}
        host, port = base_url.raw_host or "127.0.0.1", base_url.port or 80
        server_hostname = self.spec.tls.server_name or (host if ssl_ctx else None)
        timeout = self.timeouts.connect

        async def open_raw(
            factory: Callable[[], asyncio.Protocol],
        ) -> tuple[asyncio.Transport, asyncio.Protocol]:
            loop = asyncio.get_running_loop()
            connecting = loop.create_connection(
                factory,
                host,
                port,
                ssl=ssl_ctx or None,
                server_hostname=server_hostname if ssl_ctx else None,
            )
            transport, protocol = await asyncio.wait_for(connecting, timeout)
            return transport, protocol

        self._upstream = Upstream(
            open_raw=opener or open_raw,
            host_header=base_url.raw_authority,
            base_url=base_url,
            session=self._session,
            credentials=tuple(credentials),
            server_hostname=self.spec.tls.server_name,
            secrets=secrets,
            origins=frozenset(origins),
        )

    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise BackendUnreachable(
                self.name, f"backend '{self.name}' is not ready yet; try again in a moment"
            )
        return self._upstream

    async def start(self, progress: Progress) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> HealthResult:
        """Ask the backend's `check_path` with our credentials, and time it."""

        started = time.monotonic()
        try:
            up = self.upstream()
            async with asyncio.timeout(self.timeouts.connect):
                async with up.client.get(
                    up.base_url / self.check_path,
                    headers=dict(up.credentials),
                    server_hostname=up.server_hostname,
                ) as resp:
                    await resp.read()
                    if resp.status in (401, 403):
                        raise BackendAuthError(
                            self.name,
                            f"backend '{self.name}' refused the relay's credentials "
                            f"(HTTP {resp.status}); check its token "
                            f"(from {self.spec.token.describe()})",
                        )
                    if resp.status >= 400:
                        raise BackendError(
                            self.name, f"backend '{self.name}' answered HTTP {resp.status}"
                        )
            result = HealthResult(True, (time.monotonic() - started) * 1000, time.time())
        except BackendError as exc:
            result = HealthResult(False, None, time.time(), exc.message)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            err = translate_client_error(self.name, exc)
            result = HealthResult(False, None, time.time(), err.message)
        self.last_health = result
        return result

    def describe(self) -> dict[str, Any]:
        health = self.last_health
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.public_url(),
            "reachable": health.reachable if health else None,
            "latency_ms": round(health.latency_ms, 2) if health and health.latency_ms else None,
            "checked_at": health.checked_at if health else None,
            "error": health.error if health else None,
        }

    def public_url(self) -> str:
        return self.spec.public_url()

    def explain(self, error: BackendError) -> BackendError:
        """Add to a TLS failure which name was verified against which CA."""
        if not isinstance(error, BackendTLSError) or self._upstream is None:
            return error
        up = self._upstream
        name = up.server_hostname or up.base_url.host
        ca = f"the CA file {self.spec.tls.ca_cert} and the system store"
        if self.spec.tls.ca_cert is None:
            ca = "the system store (no --ca-cert given)"
        return BackendTLSError(
            self.name, f"{error.message} (verified the name {name!r} against {ca})"
        )

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        """A look at each answer forwarded through aiohttp: an error to send instead, or None."""
        return None
