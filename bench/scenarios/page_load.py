"""Scenario 6, JupyterLab page load in headless Chromium, direct and through the relay.

Debian's Chromium driven by Playwright (which cannot download its own browser
here). Each load is cold: a new browser context (empty cache, no cookies)
opens `/lab?token=…` and the time runs until the launcher is visible. For the
relay the `?token=` navigation is answered by a redirect that sets its cookie,
as a user's first visit is. One discarded load per path first warms the
server side (templates, extension lists); then the median of 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from playwright.async_api import Browser, async_playwright
from tests.browser import CHROMIUM, CHROMIUM_ARGS

from ..backends import JUPYTER
from ..paths import DIRECT, RELAY, ProxyPath
from .base import Context, Metric, Metrics, Scenario, median

LOAD_TIMEOUT_MS = 60_000


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright, for a block."""
    if not await asyncio.to_thread(CHROMIUM.is_file):
        raise RuntimeError(f"{CHROMIUM} is missing (Debian package chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def cold_load(browser: Browser, ctx: Context, path: ProxyPath) -> float:
    """Seconds from opening `/lab?token=` in a new context until the launcher is visible."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.set_default_timeout(LOAD_TIMEOUT_MS)
        page = await context.new_page()
        failures: list[str] = []

        def on_response(response: Any) -> None:
            if response.status >= 400:
                failures.append(f"{response.status} {response.url.split('?')[0]}")

        page.on("response", on_response)
        started = time.perf_counter()
        await page.goto(path.url(JUPYTER, f"lab?token={ctx.token}"))
        await page.locator(".jp-Launcher").first.wait_for(state="visible")
        seconds = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"requests failed while loading: {failures[:5]}")
        return seconds
    finally:
        await context.close()


async def cold_loads(browser: Browser, ctx: Context, path: ProxyPath, count: int) -> list[float]:
    """`count` cold loads (after a discarded warm-up load unless --quick), in seconds."""
    if ctx.settings.page_warmup:
        await cold_load(browser, ctx, path)
    return [await cold_load(browser, ctx, path) for _ in range(count)]


class PageLoad(Scenario):
    name = "page_load"
    title = "JupyterLab page load"
    paths = (DIRECT, RELAY)
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("median_s", "median cold load to launcher", "s", False, headline=True),
        Metric("min_s", "fastest load", "s", False),
        Metric("max_s", "slowest load", "s", False),
    )

    def __init__(self) -> None:
        self.browser: Browser | None = None

    @contextlib.asynccontextmanager
    async def prepared(self, ctx: Context) -> AsyncIterator[None]:
        async with chromium() as browser:
            self.browser = browser
            try:
                yield
            finally:
                self.browser = None

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        assert self.browser is not None
        times = await cold_loads(self.browser, ctx, path, ctx.settings.page_loads)
        return {"median_s": median(times), "min_s": min(times), "max_s": max(times)}
