"""How the tests and the benchmark start Debian's Chromium (Playwright cannot download one)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, Response, WebSocket, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, and quiet: no background traffic to hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class PageLog:
    """What a page did that a failure message should tell: console, failed requests, sockets.

    Subclasses hear of each websocket the page opens through `on_websocket`.
    """

    def __init__(self) -> None:
        self.console: list[str] = []
        self.failed: list[str] = []
        self.websockets: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("response", self._response)
        page.on("requestfailed", lambda r: self.failed.append(f"failed {r.method} {r.url}"))
        page.on("websocket", self._websocket)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text[:300]}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    def _websocket(self, ws: WebSocket) -> None:
        self.websockets.append(ws.url)
        self.on_websocket(ws)

    def on_websocket(self, ws: WebSocket) -> None:
        pass

    def __str__(self) -> str:
        return (
            f"\nHTTP failures: {self.failed}\nwebsockets: {self.websockets}\n"
            f"console errors/warnings: {self.console[-20:]}"
        )


@contextlib.asynccontextmanager
async def open_page(log: PageLog, timeout_ms: int, screenshot: Path) -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium, logged into `log`.

    If the body fails, the test fails with a screenshot, the page's URL and log.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(timeout_ms)
            page = await context.new_page()
            log.attach(page)
            try:
                yield page
            except Exception as exc:
                shot = screenshot
                try:
                    await page.screenshot(path=str(shot), full_page=True)
                except Exception as shot_exc:
                    shot = Path(f"(no screenshot: {shot_exc})")
                pytest.fail(f"{exc}\nscreenshot: {shot}\npage: {page.url}{log}")
        finally:
            await browser.close()
