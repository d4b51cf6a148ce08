"""The status page at `/relay/` in front of two real Jupyter servers, in Chromium and as HTML.

Chromium opens the URL a person would (`/relay/?token=…`), ends on `/relay/` logged in,
sees both backends up with the sessions started through the relay, and sees a backend
whose server stopped go down, with the reason, within 10 s, without reloading. Without
JavaScript, the HTML alone lists the backends; no token appears in it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect
from yarl import URL

from jupyter_relay.server import RunningRelay
from jupyter_relay.status import PAGE_CSP

from .browser import PageLog, open_page
from .conftest import RELAY_TOKEN, start_relay
from .needs import need_chromium
from .servers import JupyterServer, start_jupyter

TIMEOUT_MS = 60_000
# Names a notebook may have, which the page must show as text, not as markup.
PATH_A = "analysis <b>&amp; co</b>.ipynb"
PATH_B = "gpu/<img src=x onerror=alert(1)>.ipynb"


@dataclass
class Pair:
    a: JupyterServer
    b: JupyterServer

    @property
    def backend_args(self) -> list[str]:
        return [f"a={self.a.backend_arg}", f"b={self.b.backend_arg}"]

    @property
    def secrets(self) -> list[str]:
        return [RELAY_TOKEN, self.a.token, self.b.token]


def start_pair(tmp: Path) -> Pair:
    servers = []
    try:
        for name in ("a", "b"):
            root = tmp / f"root-{name}"
            root.mkdir()
            servers.append(start_jupyter(root, tmp, env_extra={"RELAY_TEST_BACKEND": name}))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return Pair(*servers)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two Jupyter servers that stay up, for the tests that stop none."""
    servers = start_pair(tmp_path_factory.mktemp("status"))
    yield servers
    servers.a.stop()
    servers.b.stop()


@pytest.fixture
async def relay(pair: Pair) -> AsyncIterator[RunningRelay]:
    running = await start_relay(pair.backend_args)
    yield running
    await running.stop()


class Page(HTMLParser):
    """The status page as a browser without JavaScript has it: sections and their text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, str | None]] = {}
        self.text: list[str] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "section" and fields.get("data-name"):
            self.sections[str(fields["data-name"])] = fields
        if tag == "script":
            self.scripts.append(fields)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def start_session(client: aiohttp.ClientSession, base: str, path: str, kernel: str) -> Any:
    body = {"path": path, "type": "notebook", "name": "", "kernel": {"name": kernel}}
    async with client.post(base + "api/sessions", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def test_the_html_alone_lists_the_backends_and_no_token(
    relay: RunningRelay, pair: Pair, client: aiohttp.ClientSession
) -> None:
    await start_session(client, relay.base_url, PATH_A, "python3")
    async with client.get(relay.base_url + "relay/", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == PAGE_CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
        html = await resp.text()
    page = Page()
    page.feed(html)
    assert {n: s["data-state"] for n, s in page.sections.items()} == {"a": "up", "b": "up"}
    text = "".join(page.text)
    assert PATH_A in text, "the notebook's path, shown as text"
    assert f"127.0.0.1:{pair.b.port}" in text
    assert page.scripts == [{"src": "/relay/static/status.js", "defer": None}]
    for secret in pair.secrets:
        assert secret not in html
    # The page's own script and style load under that policy: they are the relay's.
    for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
        async with client.get(relay.base_url + "relay/static/" + name) as resp:
            assert (resp.status, resp.content_type) == (200, kind)
    async with client.get(relay.base_url + "relay/static/other.js") as resp:
        assert resp.status == 404
        assert "the status page is at /relay/" in await resp.text()


async def test_relay_without_the_slash_redirects_there_keeping_the_query(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    url = URL(relay.base_url + "relay?x=%2F1&y=2", encoded=True)  # sent as written
    async with client.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/relay/?x=%2F1&y=2"
    async with client.get(relay.base_url + "relay", allow_redirects=False) as resp:
        assert resp.headers["Location"] == "/relay/"


async def test_a_browser_with_the_token_in_the_url_ends_on_the_page_logged_in(
    relay: RunningRelay, anon: aiohttp.ClientSession
) -> None:
    navigate = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
    for path in ("relay/", "relay"):
        async with anon.get(f"{relay.base_url}{path}?token={RELAY_TOKEN}", headers=navigate) as r:
            assert r.status == 200
            assert str(r.url) == relay.base_url + "relay/"
            assert RELAY_TOKEN not in await r.text()


@pytest.mark.parametrize("path", ["relay/", "relay", "relay/static/status.js"])
async def test_without_the_token_the_page_is_refused(
    relay: RunningRelay, anon: aiohttp.ClientSession, path: str
) -> None:
    async with anon.get(relay.base_url + path, allow_redirects=False) as resp:
        assert resp.status == 403
        body = await resp.text()
        assert "token" in body.lower() and "jupyter-relay" not in body.split("<h1>")[0]


async def test_chromium_sees_a_backend_go_down_within_10_seconds(tmp_path: Path) -> None:
    need_chromium()
    pair = await asyncio.to_thread(start_pair, tmp_path)
    try:
        running = await start_relay(pair.backend_args)
        try:
            await _watch_the_page(running, pair, tmp_path)
        finally:
            await running.stop()
    finally:
        await asyncio.to_thread(pair.a.stop)
        await asyncio.to_thread(pair.b.stop)


async def _watch_the_page(running: RunningRelay, pair: Pair, tmp_path: Path) -> None:
    headers = {"Authorization": f"token {RELAY_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as client:
        on_a = await start_session(client, running.base_url, PATH_A, "python3")
        on_b = await start_session(client, running.base_url, PATH_B, "b--python3")
    log = PageLog()
    shot = tmp_path / "status-page.png"
    async with open_page(log, TIMEOUT_MS, tmp_path / "failure.png") as page:
        # The URL a person would open: the printed one, at /relay/.
        await page.goto(f"{running.base_url}relay/?token={RELAY_TOKEN}")
        assert page.url == running.base_url + "relay/", "the token left the address bar"
        a = page.locator('section.backend[data-name="a"]')
        b = page.locator('section.backend[data-name="b"]')
        wait = TIMEOUT_MS  # the first lists of a relay just started, two kernels starting
        await expect(a).to_have_attribute("data-state", "up", timeout=wait)
        await expect(b).to_have_attribute("data-state", "up", timeout=wait)
        await expect(a.locator(".session .path")).to_have_text(PATH_A, timeout=wait)
        await expect(b.locator(".session .path")).to_have_text(PATH_B, timeout=wait)
        await expect(a.locator(".kernel code")).to_have_text(on_a["kernel"]["id"], timeout=wait)
        await expect(b.locator(".kernel code")).to_have_text(on_b["kernel"]["id"], timeout=wait)
        state = re.compile("idle|busy|starting")
        await expect(b.locator(".session .kstate")).to_have_text(state, timeout=wait)
        await expect(page.locator("#live")).to_contain_text("Live", timeout=wait)  # JS runs
        # Marks this document: a reload would lose it.
        await page.evaluate("window.relayTestMark = 1")

        await asyncio.to_thread(pair.b.stop)
        stopped = time.monotonic()
        await expect(b).to_have_attribute("data-state", "down", timeout=10_000)
        took = time.monotonic() - stopped
        await expect(b.locator(".reason")).to_contain_text("is unreachable")
        await expect(b.locator("svg.chart rect.fail")).not_to_have_count(0)  # the chart too
        await expect(a.locator("svg.chart polyline, svg.chart circle")).not_to_have_count(0)
        await expect(a).to_have_attribute("data-state", "up")
        assert await page.evaluate("window.relayTestMark") == 1, "the page was reloaded"
        await page.screenshot(path=str(shot), full_page=True)
        content = await page.content()
        for secret in pair.secrets:
            assert secret not in content
        assert not [m for m in log.console if "Content Security Policy" in m], log
    print(f"b shown down {took:.1f} s after its server stopped; screenshot: {shot}")
