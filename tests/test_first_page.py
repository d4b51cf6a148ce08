"""The first thing a browser user sees: the printed URL, opened as printed, is JupyterLab.

`jupyter_server`'s own `/` is a bare "A Jupyter Server is running." page; the relay
sends a browser opening `/` to JupyterLab where the primary serves it, as
`jupyter lab` does, and leaves a primary that serves no such page its own `/`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from .browser import PageLog, open_page
from .conftest import start_relay
from .servers import RelayProcess, start_jupyter, start_relay_process

TIMEOUT_MS = 90_000


@pytest.fixture
def printed(tmp_path: Path) -> RelayProcess:
    """The relay as a newcomer starts it: no flags but a free port, the embedded default."""
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "data.csv").write_text("a,b\n1,2\n")
    return start_relay_process(["--port", "0"], tmp_path, cwd=root)


async def test_the_printed_url_opens_jupyterlab(printed: RelayProcess, tmp_path: Path) -> None:
    try:
        assert urlsplit(printed.url).path == "/"  # what IDEs take as the server's base
        log = PageLog()
        async with open_page(log, TIMEOUT_MS, tmp_path / "first-page.png") as page:
            await page.goto(printed.url)
            await page.locator(".jp-LauncherCard").first.wait_for()
            where = urlsplit(page.url)
            assert where.path == "/lab", page.url
            assert "token" not in where.query  # the token went into the cookie
            # The files of the directory the relay was started in are in the file browser.
            await page.get_by_text("data.csv").first.wait_for()
    finally:
        assert printed.stop() == 0


async def test_a_primary_without_jupyterlab_keeps_its_own_page(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    (tmp_path / "root").mkdir()
    server = start_jupyter(
        tmp_path / "root",
        tmp_path,
        extra_args=("--ServerApp.jpserver_extensions={'jupyterlab': False, 'notebook': False}",),
    )
    try:
        running = await start_relay([f"bare={server.backend_arg}"])
        try:
            async with client.get(running.base_url, allow_redirects=False) as resp:
                assert resp.status == 200, resp.headers
                assert "A Jupyter Server is running" in await resp.text()
        finally:
            await running.stop()
    finally:
        server.stop()


async def test_only_a_get_of_the_root_is_sent_on(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    (tmp_path / "root").mkdir()
    server = start_jupyter(tmp_path / "root", tmp_path)
    try:
        running = await start_relay([f"lab={server.backend_arg}"])
        try:
            base = running.base_url
            async with client.get(base + "?x=1", allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/lab?x=1"
            async with client.post(base, allow_redirects=False) as resp:
                assert resp.status != 302  # the primary's own answer to a POST of /
            async with (
                aiohttp.ClientSession() as anon,
                anon.get(base, allow_redirects=False) as resp,
            ):
                assert resp.status == 403  # the gate first: a stranger learns nothing
        finally:
            await running.stop()
    finally:
        server.stop()
