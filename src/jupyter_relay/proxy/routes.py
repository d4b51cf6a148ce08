"""The port proxy's aiohttp handlers: `/proxy/...` and `/apps/...`.

The fast path forwards what it can decide alone (allowed, no DNS, app
running); these handlers serve the rest: refusals with their messages, names
to resolve, apps to start, and websockets the fast path hands over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..headers import is_upgrade
from .target import ProxyTarget

if TYPE_CHECKING:
    from ..app import Relay

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handlers(relay: Relay) -> list[tuple[str, Handler]]:
    async def forward(request: web.Request, target: ProxyTarget) -> web.StreamResponse:
        async with target.held():
            if is_upgrade(request.headers):
                return await relay.forwarder.websocket(request, target)
            return await relay.forwarder.http(request, target)

    # Prefixes are read as the client spelled them: `/proxy/127.0.0.1%3A8050/` is no form.
    async def proxy(request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.partition("?")[0]
        return await forward(request, await relay.port_proxy.target(raw_path))

    async def apps(request: web.Request) -> web.StreamResponse:
        raw_path, _, query = request.raw_path.partition("?")
        target, location = await relay.apps.target(raw_path)
        if target is None:
            return web.Response(
                status=301, headers={"Location": location + ("?" + query if query else "")}
            )
        return await forward(request, target)

    return [
        ("/proxy", proxy),
        ("/proxy/{tail:.*}", proxy),
        ("/apps", apps),
        ("/apps/{tail:.*}", apps),
    ]
