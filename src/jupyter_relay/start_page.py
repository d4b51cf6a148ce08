"""Which page `/` leads to: JupyterLab where the primary serves it, as `jupyter lab` does.

The `local` backend runs `jupyter_server`, whose `/` is a bare "A Jupyter
Server is running." page, and a remote `jupyter server` is the same: so the
relay asks the primary once whether it serves `/lab` (JupyterLab), else
`/tree` (the Notebook), and sends a browser opening `/` there. A primary that
serves neither keeps its own `/`. A found page is kept; not finding one is
asked again after `RETRY` seconds (the backend may have been down).
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from yarl import URL

from .backends.base import Backend
from .errors import BackendError

log = logging.getLogger("jupyter_relay")

PAGES = ("lab", "tree")  # in order of preference
RETRY = 30.0
ASK_TIMEOUT = 10.0


class StartPage:
    def __init__(self, primary: Backend | None) -> None:
        self.primary = primary
        self.page: str | None = None
        self.asked_at = -RETRY
        self._asking: asyncio.Task[str | None] | None = None

    async def find(self) -> str | None:
        """`/lab`, `/tree`, or None (the primary's own `/`)."""
        if self.page is not None or self.primary is None:
            return self.page
        if self._asking is None and time.monotonic() - self.asked_at < RETRY:
            return None
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask(self.primary))
        try:
            return await asyncio.shield(self._asking)
        finally:
            if self._asking is not None and self._asking.done():
                self._asking = None

    async def _ask(self, primary: Backend) -> str | None:
        self.asked_at = time.monotonic()
        try:
            up = primary.upstream()
        except BackendError:
            return None
        for page in PAGES:
            try:
                async with asyncio.timeout(ASK_TIMEOUT):
                    async with up.client.get(
                        up.base_url.join(URL(page)),
                        headers=dict(up.credentials),
                        allow_redirects=False,
                        server_hostname=up.server_hostname,
                    ) as resp:
                        if resp.status == 200 and resp.content_type == "text/html":
                            self.page = "/" + page
                            log.info("/ leads to %s, which the primary serves", self.page)
                            return self.page
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.debug("asking the primary for /%s: %s", page, exc)
                return None
        return None
