"""JupyterLab in Chromium switches a notebook between backends through the kernel mixer.

The relay runs in-process in front of Jupyter servers `a` (the primary: the lab page
and the notebook file live there) and `b`, and Kernel Gateway `eg`. The page is the
real JupyterLab, driven by Playwright: it starts a notebook on `a`'s kernel, runs a
cell, switches the kernel with JupyterLab's own "Select Kernel" dialog to `b`'s and
then to `eg`'s, and runs the cell again each time; the kernels print where they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from playwright.async_api import Locator, Page, WebSocket, expect

from jupyter_relay.server import RunningRelay

from .browser import PageLog, open_page
from .conftest import RELAY_TOKEN, Mixed, start_relay
from .needs import need_chromium
from .waiting import eventually

# Generous: two cores, three kernels starting, and a whole JupyterLab to load.
TIMEOUT_MS = 90_000
TIMEOUT_S = TIMEOUT_MS / 1000
CODE = 'import os; print(os.environ["RELAY_TEST_BACKEND"])'
PRIMARY_DISPLAY = "Python 3 (ipykernel)"
KERNEL_WS_RE = re.compile(r"/api/kernels/([^/?]+)/channels")


@pytest.fixture
async def mixer(mixed: Mixed) -> AsyncIterator[RunningRelay]:
    """The relay in-process, mixing `a` (primary), `b` and the gateway `eg`."""
    running = await start_relay(mixed.backend_args)
    yield running
    await running.stop()


class KernelLog(PageLog):
    """The page's log, and which kernels answered the page over their websocket."""

    def __init__(self) -> None:
        super().__init__()
        self._answered: dict[str, asyncio.Event] = {}

    def _event(self, kernel_id: str) -> asyncio.Event:
        return self._answered.setdefault(kernel_id, asyncio.Event())

    def on_websocket(self, ws: WebSocket) -> None:
        match = KERNEL_WS_RE.search(ws.url)
        if match:
            event = self._event(match.group(1))
            ws.on("framereceived", lambda _: event.set())

    async def kernel_answered(self, kernel_id: str) -> None:
        """Wait until kernel `kernel_id` sent the page a frame over its websocket."""
        try:
            await asyncio.wait_for(self._event(kernel_id).wait(), TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(
                f"kernel {kernel_id} never answered the page over a websocket"
            ) from None


async def _get_json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return await resp.json()


async def _sessions(client: aiohttp.ClientSession, relay: RunningRelay) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = await _get_json(client, relay.base_url + "api/sessions")
    return sessions


async def _kernel_ids(client: aiohttp.ClientSession, relay: RunningRelay) -> set[str]:
    return {k["id"] for k in await _get_json(client, relay.base_url + "api/kernels")}


async def _the_session(
    client: aiohttp.ClientSession,
    relay: RunningRelay,
    session_id: str,
    kernel_name: str,
    path: str | None = None,
) -> dict[str, Any]:
    """Session `session_id` as the relay lists it, once its kernel is `kernel_name`.

    With `path` None, also wait until the session has its notebook's path: JupyterLab
    starts a new notebook's session under a placeholder path, then renames it.
    """

    async def the_session() -> dict[str, Any] | None:
        sessions = await _sessions(client, relay)
        mine = [s for s in sessions if s["id"] == session_id]
        assert len(mine) <= 1, f"session {session_id} is listed {len(mine)} times: {sessions}"
        if (
            mine
            and mine[0]["kernel"]["name"] == kernel_name
            and (mine[0]["path"] == path or (path is None and mine[0]["path"].endswith(".ipynb")))
        ):
            same_path = [s for s in sessions if s["path"] == mine[0]["path"]]
            assert len(same_path) == 1, f"several sessions for one notebook: {sessions}"
            return mine[0]
        return None

    return await eventually(
        the_session,
        timeout=TIMEOUT_S,
        interval=0.25,
        what=f"session {session_id} with kernel {kernel_name}, path {path}",
        ignoring=(),  # its assertions fail at once
    )


async def _wait_kernel_gone(
    client: aiohttp.ClientSession, relay: RunningRelay, kernel_id: str
) -> None:
    """The kernel a session was moved off is shut down (as jupyter_server does)."""

    async def gone() -> bool:
        ids = await _kernel_ids(client, relay)
        assert kernel_id not in ids, f"old kernel {kernel_id} still listed after the switch: {ids}"
        return True

    await eventually(gone, timeout=30, interval=0.5, what=f"the old kernel {kernel_id} gone")


def _kernel_label(panel: Locator) -> Locator:
    return panel.locator('[data-jp-item-name="kernelName"] .jp-ToolbarButtonComponent-label')


async def _run_first_cell(page: Page, panel: Locator, expected: str) -> None:
    """Run the first cell in place (Ctrl+Enter) and wait for exactly `expected` as output."""
    await expect(panel.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=TIMEOUT_MS
    )
    cell = panel.locator(".jp-Cell").first
    await cell.locator(".jp-InputArea-editor .cm-content").click()
    await page.keyboard.press("Control+Enter")
    output = cell.locator(".jp-OutputArea-output")
    await expect(output).to_have_text(
        re.compile(rf"^\s*{re.escape(expected)}\s*$"), timeout=TIMEOUT_MS
    )


async def _switch_kernel(page: Page, panel: Locator, display_name: str) -> None:
    """Change the notebook's kernel the way a user does: toolbar kernel name, dialog."""
    await panel.locator('[data-jp-item-name="kernelName"] jp-button').click()
    dialog = page.locator(".jp-Dialog")
    await expect(dialog.locator(".jp-Dialog-header")).to_have_text("Select Kernel")
    select = dialog.locator(".jp-Dialog-body select")
    await select.select_option(label=display_name)
    await dialog.locator("button.jp-mod-accept").click()
    await expect(dialog).to_have_count(0)
    await expect(_kernel_label(panel)).to_have_text(display_name, timeout=TIMEOUT_MS)


async def _notebook_across_backends(
    page: Page,
    log: KernelLog,
    relay: RunningRelay,
    client: aiohttp.ClientSession,
    specs: dict[str, dict[str, Any]],
    before: set[str],
) -> str:
    """The whole user story; returns the notebook's path (for the clean-up)."""
    response = await page.goto(f"{relay.base_url}lab?reset&token={RELAY_TOKEN}")
    assert response is not None and response.status == 200, response
    assert "jupyter-config-data" in await response.text(), "not JupyterLab's page"

    # The launcher offers one notebook card per mixed spec, under the relay's names.
    cards = page.locator('.jp-LauncherCard[data-category="Notebook"]')
    await cards.first.wait_for()
    titles = {await cards.nth(i).get_attribute("title") for i in range(await cards.count())}
    display = {name: spec["spec"]["display_name"] for name, spec in specs.items()}
    assert set(display.values()) <= titles, f"launcher cards {titles}, mixed specs {display}"
    await page.locator(
        f'.jp-LauncherCard[data-category="Notebook"][title="{PRIMARY_DISPLAY}"]'
    ).click()

    # The notebook, its file and its session are on `a`, the primary.

    async def new_sessions() -> list[dict[str, Any]]:
        return [s for s in await _sessions(client, relay) if s["id"] not in before]

    new = await eventually(
        new_sessions, timeout=TIMEOUT_S, interval=0.25, what="the notebook starts a session"
    )
    assert len(new) == 1, f"one notebook, several new sessions: {new}"
    session_id = new[0]["id"]
    session = await _the_session(client, relay, session_id, "python3")
    path = session["path"]
    assert page.url.endswith(f"/lab/tree/{quote(path)}"), (page.url, path)
    on_a = session["kernel"]["id"]
    panel = page.locator(".jp-NotebookPanel").last
    await expect(_kernel_label(panel)).to_have_text(PRIMARY_DISPLAY, timeout=TIMEOUT_MS)
    # A cell run before the kernel is connected is silently dropped: wait for its answer.
    await log.kernel_answered(on_a)
    cell = panel.locator(".jp-Cell").first
    editor = cell.locator(".jp-InputArea-editor .cm-content")
    await editor.click()
    await page.keyboard.type(CODE)
    await expect(editor).to_have_text(CODE)
    await _run_first_cell(page, panel, "a")

    previous = on_a
    for backend in ("b", "eg"):
        mixed_name = f"{backend}--python3"
        await _switch_kernel(page, panel, specs[mixed_name]["spec"]["display_name"])
        # The relay moved the session: same id, kernel from the other backend, listed once.
        session = await _the_session(client, relay, session_id, mixed_name, path)
        kernel_id = session["kernel"]["id"]
        assert kernel_id != previous, session
        await _wait_kernel_gone(client, relay, previous)
        await log.kernel_answered(kernel_id)
        await _run_first_cell(page, panel, backend)
        previous = kernel_id

    final = await _sessions(client, relay)
    assert [s["id"] for s in final].count(session_id) == 1, final
    assert [s["path"] for s in final].count(path) == 1, final
    return str(path)


async def test_jupyterlab_switches_notebook_between_backends(
    mixer: RunningRelay,
    mixed: Mixed,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A notebook runs a cell on `a`, then on `b`, then on `eg`, keeping its session id."""
    need_chromium()
    specs = (await _get_json(client, mixer.base_url + "api/kernelspecs"))["kernelspecs"]
    assert {"python3", "b--python3", "eg--python3"} <= set(specs), specs
    assert specs["b--python3"]["spec"]["display_name"] == f"{PRIMARY_DISPLAY} (b)", specs
    assert specs["eg--python3"]["spec"]["display_name"] == f"{PRIMARY_DISPLAY} (eg)", specs
    before = {s["id"] for s in await _sessions(client, mixer)}
    log = KernelLog()
    path: str | None = None
    try:
        async with open_page(log, TIMEOUT_MS, tmp_path / "mixer-failure.png") as page:
            path = await _notebook_across_backends(page, log, mixer, client, specs, before)
        assert not log.failed, f"requests failed through the relay{log}"
        # Non-kernel paths go to the primary: the notebook file is on `a`'s disk.
        assert path is not None
        assert (mixed.a.root / path).is_file(), f"{path} not in a's root"
        assert not (mixed.b.root / path).exists(), f"{path} in b's root"
    finally:
        # Best effort, not to hide the failure: shut down what the notebook started on
        # the session-wide backends, and remove its file from `a`.
        with contextlib.suppress(AssertionError, aiohttp.ClientError):
            for session in await _sessions(client, mixer):
                if session["id"] not in before:
                    path = path or session["path"]
                    async with client.delete(f"{mixer.base_url}api/sessions/{session['id']}"):
                        pass
            if path is not None:
                async with client.delete(f"{mixer.base_url}api/contents/{quote(path)}"):
                    pass
