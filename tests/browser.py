"""How the tests and the benchmark start Debian's Chromium (Playwright cannot download one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    ConsoleMessage,
    Page,
    Response,
    WebSocket,
    async_playwright,
    expect,
)
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from .waiting import eventually

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


class KernelAnsweredLog(PageLog):
    """The page's log, and when a kernel first answered the page over its websocket."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel_answered = asyncio.Event()

    def on_websocket(self, ws: WebSocket) -> None:
        if "/channels" in ws.url:
            ws.on("framereceived", lambda _: self.kernel_answered.set())


async def run_cell_in_new_notebook(
    page: Page, log: KernelAnsweredLog, code: str, expected: re.Pattern[str], timeout_ms: int
) -> None:
    """From JupyterLab's launcher: a new Python notebook runs `code`, showing `expected`."""
    card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first
    await card.wait_for()
    assert "Python 3" in (await card.get_attribute("title") or "")
    await card.click()
    # A cell run before the notebook has a kernel is silently not run, and the
    # toolbar says "idle" before there is a kernel: wait until one answered over
    # its websocket.
    try:
        await asyncio.wait_for(log.kernel_answered.wait(), timeout_ms / 1000)
    except TimeoutError:
        raise AssertionError("no kernel answered over a websocket through the relay") from None
    panel = page.locator(".jp-NotebookPanel").last
    await expect(panel.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=timeout_ms
    )
    editor = panel.locator(".jp-Cell").first.locator(".jp-InputArea-editor .cm-content")
    await editor.click()
    await page.keyboard.type(code)
    await expect(editor).to_have_text(code, timeout=timeout_ms)
    await page.keyboard.press("Shift+Enter")
    output = panel.locator(".jp-Cell").first.locator(".jp-OutputArea-output")
    await expect(output).to_have_text(expected, timeout=timeout_ms)


async def save_notebook(page: Page, name: str) -> str:
    """Save the open notebook (a PUT from the page) as `name`; return the name it got."""
    await page.keyboard.press("Control+s")
    dialog = page.locator(".jp-Dialog")
    try:
        await dialog.wait_for(timeout=10_000)
    except PlaywrightTimeoutError:  # "Do not ask for rename on first save" was ticked
        return page.url.rpartition("/tree/")[2]
    await dialog.locator("input.jp-mod-styled").first.fill(name)
    await dialog.locator("button.jp-mod-accept").click()
    return name


async def wait_saved(path: Path, code: str, timeout_ms: int) -> None:
    """Wait until the notebook at `path` on the server's disk holds a cell with `code`."""

    async def cells_on_disk() -> bool:
        saved = json.loads(await asyncio.to_thread(path.read_text))
        sources = ["".join(cell["source"]) for cell in saved["cells"]]
        assert code in sources, f"cells on disk: {sources}"
        return True

    await eventually(
        cells_on_disk,
        timeout=timeout_ms / 1000,
        interval=0.2,
        what=f"{path} saved with the cell",
        ignoring=(AssertionError, OSError, ValueError, KeyError),
    )
