"""The relay as an aiohttp application: its backends, middlewares and routes.

Requests pass the error middleware (relay errors become JSON or an escaped
page), then the auth middleware (token, Origin), then reach either the
relay's own endpoints or the forwarder with the backend that serves the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from . import auth, colab, gate, status
from .backends import Backend, Timeouts, build_backend
from .backends.base import Progress, Target
from .config import RelayConfig
from .errors import BackendError, RelayError
from .forward import FORWARDED, Forwarder, ForwardSettings
from .headers import is_upgrade
from .logs import add_secret, known_secrets
from .mixer import Mixer, held
from .mixer import routes as mixer_routes
from .proxy import routes as proxy_routes
from .proxy.apps import Apps
from .proxy.core import PortProxy
from .proxy.paths import APPS, PROXY
from .responses import error_response, relay_error_response, security_headers

log = logging.getLogger("jupyter_relay")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE_MAX_AGE = 30 * 24 * 3600
HEALTH_INTERVAL = 30.0


class Relay:
    """The running relay: configuration, backends and the forwarder."""

    def __init__(self, config: RelayConfig, port: int) -> None:
        self.config = config
        self.port = port
        self.cookie_name = auth.cookie_name(port)
        timeouts = Timeouts(
            connect=config.connect_timeout,
            response=config.backend_timeout,
            start=config.start_timeout,
        )
        self.backends: dict[str, Backend] = {
            spec.name: build_backend(spec, timeouts) for spec in config.backends
        }
        self.forwarder = Forwarder(
            ForwardSettings(relay_cookie=self.cookie_name, response_timeout=config.backend_timeout)
        )
        self.mixer = Mixer(
            self.backends,
            config.primary,
            list_timeout=config.list_timeout,
            timeout=config.backend_timeout,
            held_dir=config.state_dir or held.default_dir(),
        )
        self.bridge = colab.Bridge(self)
        self.port_proxy = PortProxy(
            config.proxy_allow, config.proxy_deny_ports, self.backends, config.connect_timeout
        )
        self.apps = Apps(
            config.apps,
            config.connect_timeout,
            hide_env=frozenset(b.token.env for b in config.backends if b.token.env),
            secrets=known_secrets,
        )
        self.policy = gate.Policy(
            token=config.token.value if config.token is not None else None,
            cookie_name=self.cookie_name,
            allow_origins=config.allow_origins,
            allowed_hosts=frozenset(config.allow_hosts) if config.loopback else None,
        )
        self.started_at = time.monotonic()
        if config.token is not None:
            add_secret(config.token.value)
            add_secret(auth.cookie_value(config.token.value))

    @property
    def primary(self) -> Backend | None:
        """The backend that holds the files; None when there are only gateways."""
        if self.config.primary is None:
            return None
        return self.backends[self.config.primary]

    async def start_backends(self, progress: Progress) -> None:
        """Start every backend at once; if one cannot start, stop the rest and raise."""
        try:
            results = await asyncio.gather(
                *(b.start(progress) for b in self.backends.values()), return_exceptions=True
            )
        except BaseException:  # cancelled (Ctrl-C): stop what had started
            await asyncio.shield(self.stop_backends())
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop_backends()
            raise failures[0]

    async def stop_backends(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.backends.values()), return_exceptions=True)

    def route(self, path: str, raw_path: str) -> Target | None:
        """The backend that serves canonical `path` as it is; None when the relay must answer.

        The fast path asks this of every request and hands those with None to
        aiohttp: the relay's own endpoints, and the mixer's, which rewrite
        answers. A kernel's websocket goes straight to its owner when known; a
        port-proxy path to its target when that is allowed without DNS (and an
        app once it runs). Everything else is the primary's, the backend that
        holds the files.
        """
        if path == "/relay" or path.startswith(("/relay/", colab.PREFIX)):
            return None
        # The port proxy reads its prefix as the client spelled it (as its aiohttp routes do).
        if path.startswith(PROXY):
            return self.port_proxy.fast_target(raw_path)
        if path.startswith(APPS):
            return self.apps.fast_target(raw_path)
        if path in ("/proxy", "/apps"):
            return None
        if path.startswith(mixer_routes.PREFIXES):
            match = mixer_routes.CHANNELS_RE.fullmatch(path)
            owner = self.mixer.kernel_owner.get(match.group(1)) if match else None
            return self.backends[owner] if owner else None
        return self.primary

    def unknown_kernel(self, path: str) -> str | None:
        """The kernel a websocket at canonical `path` is for, when its owner is not known yet.

        The fast path asks the mixer for it (every backend at once) and routes again,
        so a notebook's websocket takes the same engine right after a restart as later.
        """
        match = mixer_routes.CHANNELS_RE.fullmatch(path)
        if match is None or match.group(1) in self.mixer.kernel_owner:
            return None
        return match.group(1)

    def url(self, host: str) -> str:
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{self.port}/"
        if self.config.token is None:
            return base
        return f"{base}?token={self.config.token.value}"


RELAY_KEY = web.AppKey("relay", Relay)
HEALTH_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("health_task")


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
            scheme=request.scheme,
            websocket=is_upgrade(request.headers),
            head_size=_head_size(request),
        )
        if decision.outcome is gate.Outcome.PASS:
            return await handler(request)
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
        secure=request.scheme == "https",
    )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The relay's own answers get jupyter_server's CSP and nosniff; forwarded ones keep theirs.

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
    if isinstance(response, FORWARDED):
        return
    for name, value in security_headers(response.content_type or "").items():
        response.headers.setdefault(name, value)


async def proxy(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY_KEY]
    backend = relay.primary
    if backend is None:
        gateways = ", ".join(relay.backends)
        return error_response(
            request,
            404,
            f"{request.path} is not served: this relay has only kernel backends ({gateways}), "
            "which hold no files. Add one that does, e.g. --backend local",
            "Not Found",
        )
    if is_upgrade(request.headers):
        return await relay.forwarder.websocket(request, backend)
    return await relay.forwarder.http(request, backend)


async def relay_not_found(request: web.Request) -> web.Response:
    return error_response(
        request,
        404,
        f"no relay endpoint at {request.path}; see /relay/api/status",
        "Not Found",
    )


async def _health_loop(relay: Relay) -> None:
    while True:
        await asyncio.sleep(HEALTH_INTERVAL)
        await asyncio.gather(*(b.check() for b in relay.backends.values()))


def make_app(relay: Relay) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, make_gate_middleware(relay)],
        client_max_size=0,
        # Beyond aiohttp's own limits (a 400); the gate refuses any head over HEAD_LIMIT (431).
        handler_args={"max_field_size": 2 * gate.HEAD_LIMIT, "max_line_size": 2 * gate.HEAD_LIMIT},
    )
    app[RELAY_KEY] = relay
    app.router.add_get("/relay/healthz", status.healthz_handler(relay), allow_head=True)
    app.router.add_get("/relay/api/status", status.status_handler(relay))
    app.router.add_route("*", "/relay/{tail:.*}", relay_not_found)
    for path, handler in mixer_routes.handlers(relay):
        app.router.add_route("*", path, handler)
    for path, handler in relay.bridge.routes():
        app.router.add_get(path, handler)
    for path, handler in proxy_routes.handlers(relay):
        app.router.add_route("*", path, handler)
    app.router.add_route("*", "/{tail:.*}", proxy)

    async def on_startup(app: web.Application) -> None:
        app[HEALTH_TASK_KEY] = asyncio.create_task(_health_loop(relay))

    async def on_shutdown(app: web.Application) -> None:
        await relay.forwarder.close_all()
        await relay.bridge.close()

    async def on_cleanup(app: web.Application) -> None:
        task = app.get(HEALTH_TASK_KEY)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(relay.apps.stop(), relay.port_proxy.close())
        await relay.stop_backends()

    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
