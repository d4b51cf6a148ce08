"""The relay's own answers as an aiohttp application (the engine's "house").

The engine forwards to it what the relay composes itself: the rows of
`routes.TABLE` that name a handler, and every request the gate does not
pass. Requests pass the error middleware (relay errors become JSON or an
escaped page), then the gate middleware (token, Origin, Host), then the
handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import auth, gate, routes, status
from .errors import BackendError, RelayError
from .headers import is_upgrade
from .mixer import routes as mixer_routes
from .mixer.orphans import RECONCILE_INTERVAL
from .relay import Relay
from .responses import error_response, relay_error_response, security_headers

log = logging.getLogger("jupyter_relay")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE_MAX_AGE = 30 * 24 * 3600
HEALTH_INTERVAL = 30.0


RELAY_KEY = web.AppKey("relay", Relay)
HEALTH_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("health_task")
RECONCILE_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("reconcile_task")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RelayError as exc:
        if isinstance(exc, BackendError):
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return relay_error_response(request, exc)


def make_gate_middleware(relay: Relay) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The gate (`gate.decide`) for what aiohttp serves: the fast path's hand-offs, or all."""

    @web.middleware
    async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        decision = gate.decide(
            relay.policy,
            request.method,
            request.raw_path,
            request.headers,
            scheme=relay.scheme,
            websocket=is_upgrade(request.headers),
            head_size=_head_size(request),
        )
        if decision.outcome is gate.Outcome.PASS:
            return await handler(request)
        if decision.outcome is gate.Outcome.PREFLIGHT:  # the engine answers these itself
            return web.Response(status=204, headers=dict(decision.headers))
        if decision.outcome is gate.Outcome.REDIRECT:
            # Not web.HTTPFound: it re-encodes the location (%2F would become /).
            response = web.Response(status=302, headers={"Location": decision.location})
            _set_cookie(response, relay, request)
            return response
        if decision.reason != "Token Required":  # a stranger's first try is routine
            log.warning(
                "refused %s %s (%s): %s",
                request.method,
                request.raw_path.partition("?")[0],
                request.headers.get("Origin") or request.host,
                decision.reason,
            )
        return error_response(
            request, decision.status, decision.message, decision.reason, dict(decision.headers)
        )

    return gate_middleware


def _head_size(request: web.BaseRequest) -> int:
    """The request head's size as sent: request line and header fields."""
    size = len(request.method) + len(request.raw_path) + 12
    return size + sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def _set_cookie(response: web.StreamResponse, relay: Relay, request: web.BaseRequest) -> None:
    assert relay.config.token is not None
    response.set_cookie(
        relay.cookie_name,
        auth.cookie_value(relay.config.token.value),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=relay.scheme == "https",  # the client's scheme, not the socket pair's
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The relay's own answers get jupyter_server's CSP and nosniff.

    An upgrade answered with anything but 101 closes the connection, on both engines.
    """
    if response.status == 101:
        return
    if is_upgrade(request.headers):
        # As on the fast path: a refused handshake ends the connection. The header too:
        # aiohttp chose its Connection field before this hook, and a client that is not
        # told would send its next request on a connection about to close.
        response.force_close()
        response.headers["Connection"] = "close"
    for name, value in security_headers(response.content_type or "").items():
        response.headers.setdefault(name, value)


async def relay_not_found(request: web.Request) -> web.Response:
    return error_response(
        request,
        404,
        f"no relay endpoint at {request.path}; the status page is at /relay/",
        "Not Found",
    )


async def not_the_houses(request: web.Request) -> web.Response:
    """A path the engine forwards, reaching the house: only a refusal should (the gate's)."""
    return error_response(
        request, 404, f"{request.path} is not served by the relay itself", "Not Found"
    )


async def _health_loop(relay: Relay) -> None:
    while True:
        await asyncio.sleep(HEALTH_INTERVAL)
        await status.check_all(relay, HEALTH_INTERVAL)


async def _reconcile_loop(relay: Relay) -> None:
    """Kernels started for sessions never completed: at start-up, then every so often."""
    while True:
        try:
            await relay.mixer.reconcile()
        except Exception:  # a pass that fails is tried again at the next
            log.exception("reconciling pending kernel starts failed")
        await asyncio.sleep(RECONCILE_INTERVAL)


def make_app(relay: Relay) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, make_gate_middleware(relay)],
        client_max_size=0,
        # Beyond aiohttp's own limits (a 400); the gate refuses any head over HEAD_LIMIT (431).
        handler_args={"max_field_size": 2 * gate.HEAD_LIMIT, "max_line_size": 2 * gate.HEAD_LIMIT},
    )
    app[RELAY_KEY] = relay
    handlers: dict[str, Handler] = {
        "healthz": status.healthz_handler(relay),
        "status": status.status_handler(relay),
        "status_page": status.status_page_handler(relay),
        "status_static": status.status_static,
        "relay_redirect": status.relay_redirect,
        "metrics": status.metrics_handler(relay),
        "relay_not_found": relay_not_found,
        **mixer_routes.handlers(relay.mixer),
        **relay.bridge.handlers(),
    }
    for row in routes.house_rows():
        if row.methods == "GET":
            app.router.add_get(row.template, handlers[row.handler])  # HEAD too
        else:
            app.router.add_route(row.methods, row.template, handlers[row.handler])
    # What the gate refuses on any path comes here too; the middleware answers it.
    app.router.add_route("*", "/{tail:.*}", not_the_houses)

    async def on_startup(app: web.Application) -> None:
        app[HEALTH_TASK_KEY] = asyncio.create_task(_health_loop(relay))
        if any(b.spec.kernels_only for b in relay.backends.values()):
            app[RECONCILE_TASK_KEY] = asyncio.create_task(_reconcile_loop(relay))

    async def on_shutdown(app: web.Application) -> None:
        await relay.bridge.close()

    async def on_cleanup(app: web.Application) -> None:
        for key in (HEALTH_TASK_KEY, RECONCILE_TASK_KEY):
            task = app.get(key)
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await asyncio.gather(relay.apps.stop(), relay.port_proxy.close())
        await relay.stop_backends()
        relay.mixer.held.close()

    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
