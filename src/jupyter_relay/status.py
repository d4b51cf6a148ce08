"""The relay's own endpoints: `/relay/healthz`, `/relay/api/status` and `/relay/metrics`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .backends import Backend, HealthResult
from .relay import Relay

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_STORE = {"Cache-Control": "no-store"}


def healthz_handler(relay: Relay) -> Handler:
    async def healthz(request: web.Request) -> web.StreamResponse:
        """Unauthenticated: says only whether the relay can serve its primary.

        With no primary (only gateways), whether any backend answers.
        """
        primary = relay.primary
        watched = [primary] if primary is not None else list(relay.backends.values())
        ok = any(b.last_health is not None and b.last_health.reachable for b in watched)
        return web.Response(
            status=200 if ok else 503, text="ok\n" if ok else "not ok\n", headers=NO_STORE
        )

    return healthz


async def _check(backend: Backend, seconds: float) -> None:
    """Check a backend now, but answer the status page within the list timeout."""
    try:
        async with asyncio.timeout(seconds):
            await backend.check()
    except TimeoutError:
        backend.last_health = HealthResult(
            False,
            None,
            time.time(),
            f"backend '{backend.name}' did not answer within {seconds:g} s",
        )


def status_handler(relay: Relay) -> Handler:
    async def status(request: web.Request) -> web.StreamResponse:
        """Version, uptime and each backend's state, checked now; no secrets."""
        await asyncio.gather(
            *(_check(b, relay.config.list_timeout) for b in relay.backends.values())
        )
        body = {
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - relay.started_at, 1),
            "primary": relay.config.primary,
            "auth": relay.config.token is not None,
            "allowed_origins": list(relay.config.allow_origins),
            "backends": [
                {**b.describe(), "kernels_error": relay.mixer.problem(b.name)}
                for b in relay.backends.values()
            ],
            "apps": relay.apps.describe(),
            "port_proxy": relay.port_proxy.describe(),
        }
        return web.json_response(body, headers=NO_STORE)

    return status


def metrics_handler(relay: Relay) -> Handler:
    async def metrics(request: web.Request) -> web.StreamResponse:
        """Prometheus' text format: counts, latencies, backend states; no secrets.

        Behind the token unless --metrics-public (the gate decides).
        """
        body = generate_latest(relay.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})

    return metrics
