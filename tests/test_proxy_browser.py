"""A real Chromium page through the port proxy: relative assets and a websocket.

The app (tests/webapps.py, in-process) serves `_page`, which loads a stylesheet and a
script by relative URLs; the script opens the websocket `_ws` relative to the page,
offering a subprotocol, and writes the echo into the page. The browser logs in as a
user does, with `?token=` once (the relay answers with its cookie and a redirect to
the address without it), then the cookie alone. Both the relative form and
`/proxy/<host>:<port>/` must work, and nothing the app saw (paths, queries, Cookie,
Referer, Origin) may hold the relay's token or its cookie.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from jupyter_relay.auth import cookie_value

from .browser import PageLog, open_page
from .conftest import RELAY_TOKEN
from .echo_app import Echo, run_echo
from .needs import need_chromium
from .proxying import proxy_relay
from .webapps import WebApp, run_webapp

TIMEOUT_MS = 60_000


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def backend() -> AsyncIterator[Echo]:
    async with run_echo() as echo:
        yield echo


@pytest.mark.parametrize("form", ["/proxy/{port}", "/proxy/127.0.0.1:{port}"])
async def test_a_page_loads_its_assets_and_its_websocket_echoes(
    backend: Echo, app: WebApp, tmp_path: Path, form: str
) -> None:
    need_chromium()
    prefix = form.format(port=app.port)
    log = PageLog()
    async with proxy_relay([f"lab=http://127.0.0.1:{backend.port}/"]) as relay:
        start = f"{relay.base.rstrip('/')}{prefix}/site/_page?token={RELAY_TOKEN}"
        async with open_page(log, TIMEOUT_MS, tmp_path / "proxy-page.png") as page:
            await page.goto(start)
            status = page.locator("#status")
            await expect(status).to_have_text("echo: hello from the page (chosen.v2)")
            # The stylesheet arrived and applied (it is the only source of this colour).
            await expect(status).to_have_css("color", "rgb(1, 2, 3)")
            # Reloaded without the token: the relay's cookie is enough.
            await page.goto(start.partition("?")[0])
            await expect(status).to_have_text("echo: hello from the page (chosen.v2)")
    assert not log.failed, f"requests failed through the relay{log}"
    paths = app.paths()
    for wanted in ("/site/_page", "/site/_page.css", "/site/_page.js", "/site/_ws"):
        assert wanted in paths, (wanted, paths)  # the prefix taken off
    for request in app.requests:
        seen = json.dumps(request)
        assert RELAY_TOKEN not in seen and cookie_value(RELAY_TOKEN) not in seen, request
