"""The relay's port proxy and jupyter-server-proxy, side by side, seen from the same app.

The session's real `jupyter server` has jupyter-server-proxy (the test extra installs it,
and it enables itself). For each URL form the same request goes through it and through
the relay; the app (tests/webapps.py) reports the path, the query and the three prefix
headers it got, and the Location of its redirects comes back rewritten: both must agree.

Left out on purpose, as the relay differs from jupyter-server-proxy there by design
(each is tested on the relay alone in test_proxy_forms.py / test_proxy_websocket.py):
`%2F` and `%23` (jupyter-server-proxy decodes them, so `%23` even cuts the path), the
subprotocol choice (it takes the client's first), an absolute Location to the app's own
origin (it leaves it pointing at the app's port), the Host header it passes (the
client's), and `/proxy/localhost:<port>/`, which it announces under the prefix
`/proxy/<port>`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest

from .conftest import WatchedRelay
from .echo_app import run_echo
from .needs import missing
from .proxying import Got, fetch, proxy_relay, seen, url
from .servers import JupyterServer
from .webapps import WebApp, run_webapp


@dataclass(frozen=True)
class View:
    path: str
    query: str
    prefixes: tuple[str | None, ...]


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def relay() -> AsyncIterator[WatchedRelay]:
    async with run_echo() as backend, proxy_relay([f"lab=http://127.0.0.1:{backend.port}/"]) as r:
        yield r


@pytest.fixture
def jsp(jupyter: JupyterServer) -> JupyterServer:
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        missing("jupyter-server-proxy is not installed (the test extra)")
    return jupyter


async def through_both(
    relay: WatchedRelay, jsp: JupyterServer, path: str, client: aiohttp.ClientSession
) -> tuple[Got, Got]:
    """`path` through jupyter-server-proxy (its token in a header) and through the relay."""
    async with aiohttp.ClientSession(headers=jsp.headers) as direct:
        theirs = await fetch(direct, "GET", url(jsp.base, path))
    ours = await fetch(client, "GET", url(relay.base, path))
    return theirs, ours


def view(got: Got) -> View:
    echo = seen(got)
    return View(echo.path, echo.query, tuple(echo.prefix_headers().values()))


def forms(port: int) -> list[str]:
    return [
        f"/proxy/{port}/some/where?x=1&y=%E2%9C%93",
        f"/proxy/{port}/",
        f"/proxy/{port}",
        f"/proxy/{port}/a%20b/%E2%9C%93/?q=a+b&e=",
        f"/proxy/absolute/{port}/some/where?x=1",
        f"/proxy/absolute/{port}/",
        f"/proxy/127.0.0.1:{port}/some/where?x=1",
        f"/proxy/127.0.0.1:{port}/",
        f"/proxy/127.0.0.1:{port}",
        f"/proxy/absolute/127.0.0.1:{port}/some/where?x=1",
    ]


async def test_the_app_sees_the_same_path_query_and_prefix(
    relay: WatchedRelay, jsp: JupyterServer, app: WebApp, client: aiohttp.ClientSession
) -> None:
    differ = []
    for path in forms(app.port):
        theirs, ours = await through_both(relay, jsp, path, client)
        if view(theirs) != view(ours):
            differ.append((path, view(theirs), view(ours)))
    assert not differ, differ
    # Both really went to the app: two requests per form.
    assert len(app.requests) == 2 * len(forms(app.port))


async def test_redirects_are_rewritten_the_same_way(
    relay: WatchedRelay, jsp: JupyterServer, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port = app.port
    prefixes = [f"/proxy/{port}", f"/proxy/127.0.0.1:{port}", f"/proxy/absolute/{port}"]
    locations = [
        "/target",
        "/",
        "/deep/er/?x=1&y=%E2%9C%93",
        "next/page",
        "../up",
        "http://example.org/elsewhere",
        f"/proxy/absolute/{port}/t",
    ]
    differ = []
    compared = 0
    for prefix in prefixes:
        for location in locations:
            for status in (302, 307):
                path = f"{prefix}/_redirect?status={status}&location={quote(location, safe='')}"
                theirs, ours = await through_both(relay, jsp, path, client)
                assert theirs.status == status, (path, theirs.status, theirs.text[:300])
                compared += 1
                if (ours.status, ours.location) != (theirs.status, theirs.location):
                    differ.append((path, theirs.location, (ours.status, ours.location)))
    assert not differ, differ
    assert compared == len(prefixes) * len(locations) * 2
