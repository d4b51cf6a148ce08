"""The relay's own endpoints: `/relay/healthz`, `/relay/api/status`, the status page and
`/relay/metrics`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .backends import Backend, HealthResult
from .errors import NotFound, RelayError
from .relay import Relay
from .status_page import BackendView, PageData, render_page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_STORE = {"Cache-Control": "no-store"}
# The page loads only the relay's own script and style, and fetches only itself.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
STATIC = {
    "status.js": "text/javascript",
    "status.css": "text/css",
}


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


async def check_all(relay: Relay, seconds: float | None = None) -> None:
    """Check every backend at once (each within `seconds`), and keep it in the history."""
    limit = relay.config.list_timeout if seconds is None else seconds
    await asyncio.gather(*(_check(b, limit) for b in relay.backends.values()))
    for backend in relay.backends.values():
        health = backend.last_health
        if health is not None:
            latency = health.latency_ms if health.reachable else None
            relay.health_history.record(backend.name, health.checked_at, latency)


def status_handler(relay: Relay) -> Handler:
    async def status(request: web.Request) -> web.StreamResponse:
        """Version, uptime and each backend's state, checked now; no secrets."""
        await check_all(relay)
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
            "reconciled": [{"at": at, "what": what} for at, what in relay.mixer.reconciled],
            "pending_kernel_starts": relay.mixer.pending_starts,
        }
        return web.json_response(body, headers=NO_STORE)

    return status


async def _lists(relay: Relay) -> tuple[list[Any], list[Any], str | None]:
    """The mixer's kernels and sessions, and why not when no backend could list them."""
    kernels, sessions = await asyncio.gather(
        relay.mixer.list_kernels(), relay.mixer.list_sessions(), return_exceptions=True
    )
    problems = [str(r.message) for r in (kernels, sessions) if isinstance(r, RelayError)]
    for result in (kernels, sessions):
        if isinstance(result, BaseException) and not isinstance(result, RelayError):
            raise result
    return (
        kernels.body if not isinstance(kernels, BaseException) else [],
        sessions.body if not isinstance(sessions, BaseException) else [],
        "; ".join(dict.fromkeys(problems)) or None,
    )


async def page_data(relay: Relay) -> PageData:
    """Everything the status page shows, every backend checked now."""
    (kernels, sessions, lists_error), _ = await asyncio.gather(_lists(relay), check_all(relay))
    now = time.time()
    views = []
    for backend in relay.backends.values():
        health, info = backend.last_health, backend.describe()
        views.append(
            BackendView(
                name=backend.name,
                kind=str(info["kind"]),
                url=str(info["url"]),
                primary=backend.name == relay.config.primary,
                reachable=health.reachable if health else None,
                latency_ms=health.latency_ms if health and health.reachable else None,
                error=health.error if health else None,
                kernels_error=relay.mixer.problem(backend.name),
                history=relay.health_history.samples(backend.name, now),
                reached=info.get("reached"),
            )
        )
    return PageData(
        version=__version__,
        uptime_seconds=time.monotonic() - relay.started_at,
        now=now,
        backends=tuple(views),
        kernels=[k for k in kernels if isinstance(k, dict)],
        sessions=[s for s in sessions if isinstance(s, dict)],
        owners=dict(relay.mixer.kernel_owner),
        lists_error=lists_error,
        apps=relay.apps.describe(),
        port_proxy=relay.port_proxy.describe(),
        reconciled=tuple(relay.mixer.reconciled),
        pending_starts=relay.mixer.pending_starts,
    )


def status_page_handler(relay: Relay) -> Handler:
    async def status_page(request: web.Request) -> web.StreamResponse:
        """The status page for a person; it refreshes itself (`status.js`)."""
        page = render_page(await page_data(relay))
        headers = {**NO_STORE, "Content-Security-Policy": PAGE_CSP}
        return web.Response(text=page, content_type="text/html", headers=headers)

    return status_page


async def relay_redirect(request: web.Request) -> web.StreamResponse:
    """`/relay` is the status page's directory: go there, keeping the query."""
    query = request.raw_path.partition("?")[2]
    location = "/relay/" + (f"?{query}" if query else "")
    return web.Response(status=302, headers={"Location": location, **NO_STORE})


async def status_static(request: web.Request) -> web.StreamResponse:
    """The status page's own script and style, from the package."""
    name = request.match_info["name"]
    if name not in STATIC:
        raise NotFound(f"no file {name!r} under /relay/static/; the status page is at /relay/")
    text = resources.files("jupyter_relay").joinpath("static", name).read_text("utf-8")
    return web.Response(
        text=text,
        content_type=STATIC[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def metrics_handler(relay: Relay) -> Handler:
    async def metrics(request: web.Request) -> web.StreamResponse:
        """Prometheus' text format: counts, latencies, backend states; no secrets.

        Behind the token unless --metrics-public (the gate decides).
        """
        body = generate_latest(relay.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})

    return metrics
