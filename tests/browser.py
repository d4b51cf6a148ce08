"""How the tests and the benchmark start Debian's Chromium (Playwright cannot download one)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, Response, WebSocket

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
