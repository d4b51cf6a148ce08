"""`/proxy/<port>/` sent on to a primary that has a port proxy of its own.

With a `jupyter` primary on another host, or a `hub` primary, the port is on
the backend's machine and only the backend can reach it: the request goes to
the backend as an ordinary path (`/user/<name>/proxy/<port>/...` on a hub), with
the backend's credentials and never the relay's, and jupyter-server-proxy there
answers. A backend without one answers 404; the relay shows the backend that
404 first and asks jupyter-server-proxy's own API (`server-proxy/servers-info`)
whether it is installed there: if it is, the 404 is the app's and passes on;
if not, the client gets a 404 that says so and names the two ways out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp

from ..backends.base import Backend, Upstream
from ..errors import BackendError, BackendNotFound

PROBE_PATH = "server-proxy/servers-info"  # jupyter-server-proxy's API, on every version >= 3
PROBE_TTL = 30.0  # seconds an answer of the probe is kept
PROBE_TIMEOUT = 10.0


class OwnProxy:
    """Whether a backend has jupyter-server-proxy, asked when it matters and kept a while."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.known: bool | None = None
        self.until = 0.0

    async def present(self) -> bool:
        if self.known is not None and time.monotonic() < self.until:
            return self.known
        up = self.backend.upstream()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with up.client.get(
                    up.base_url / PROBE_PATH,
                    headers=dict(up.credentials),
                    server_hostname=up.server_hostname,
                    allow_redirects=False,
                ) as resp:
                    found = resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError):
            return True  # cannot tell: the backend's own answer passes on unchanged
        self.known, self.until = found, time.monotonic() + PROBE_TTL
        return found


class PortOfBackend:
    """A Target: the primary itself, with its 404s for `/proxy/<port>/` looked at first."""

    def __init__(self, backend: Backend, own_proxy: OwnProxy, port: int) -> None:
        self.backend = backend
        self.own_proxy = own_proxy
        self.port = port

    @property
    def name(self) -> str:
        return self.backend.name

    def upstream(self) -> Upstream:
        up = self.backend.upstream()
        prior = up.vetoes

        def vetoes(status: int, location: str | None) -> bool:
            return status == 404 or (prior is not None and prior(status, location))

        return replace(up, vetoes=vetoes)

    def explain(self, error: BackendError) -> BackendError:
        return self.backend.explain(error)

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        if status != 404:
            return await self.backend.answered(status, location)
        if await self.own_proxy.present():
            return None  # jupyter-server-proxy is there: the 404 is the app's
        name, port = self.backend.name, self.port
        return BackendNotFound(
            name,
            f"backend '{name}' has no port proxy of its own: it answered 404 for "
            f"/proxy/{port}/, where the relay sends the ports of the primary's machine. "
            f"Install jupyter-server-proxy there (pip install jupyter-server-proxy, then "
            f"restart that server), or reach port {port} of this machine with "
            f"/proxy/localhost:{port}/",
        )
