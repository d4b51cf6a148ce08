"""Real clients nobody here wrote, through the relay.

JupyterLab's own `@jupyterlab/services` (from npm, run by node) and the JupyterLab
page in Chromium (driven by Playwright) talk to the in-process relay in front of
a real Jupyter server. Both run in child processes, awaited without blocking the
event loop that serves the relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page

from jupyter_relay.server import RunningRelay

from .browser import (
    KernelAnsweredLog,
    open_page,
    run_cell_in_new_notebook,
    save_notebook,
    wait_saved,
)
from .conftest import RELAY_TOKEN
from .kernel_client import V1
from .needs import JS_DIR, need_chromium, need_node
from .servers import JupyterServer

SERVICES_CLIENT = JS_DIR / "services_client.mjs"
NODE_TIMEOUT = 60.0
BROWSER_TIMEOUT_MS = 60_000
CODE = "print(6*7)"


async def _sessions(client: aiohttp.ClientSession, relay: RunningRelay) -> list[dict[str, Any]]:
    async with client.get(relay.base_url + "api/sessions") as resp:
        assert resp.status == 200, await resp.text()
        sessions: list[dict[str, Any]] = await resp.json()
        return sessions


async def _kernel_ids(client: aiohttp.ClientSession, relay: RunningRelay) -> set[str]:
    async with client.get(relay.base_url + "api/kernels") as resp:
        assert resp.status == 200, await resp.text()
        return {k["id"] for k in await resp.json()}


async def test_jupyterlab_services_from_npm(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    """@jupyterlab/services lists specs, starts a session, runs a cell, shuts it down."""
    node = need_node()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    # The token in the environment, not argv: like a user would, keep it out of `ps`.
    env["RELAY_TOKEN"] = RELAY_TOKEN
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SERVICES_CLIENT),
        relay.base_url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(
            f"services_client.mjs did not finish in {NODE_TIMEOUT} s\n"
            f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
        )
    detail = f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
    assert proc.returncode == 0, f"services_client.mjs exited {proc.returncode}\n{detail}"
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, f"expected one line of JSON on stdout\n{detail}"
    result = json.loads(lines[0])
    assert result["ok"] is True, detail
    assert "python3" in result["kernelspecs"], detail
    assert result["default_kernelspec"] == "python3", detail
    assert result["output"] == "42\n", detail
    assert result["execute_status"] == "ok", detail
    assert result["kernel_language"] == "python", detail
    # JupyterLab 4 offers the v1 binary protocol; the backend picks it, the relay passes it on.
    assert result["offered_protocols"] == [V1], detail
    assert result["protocol"] == V1, detail
    # The client shut its session down through the relay: the kernel is gone too.
    assert result["session_id"] not in {s["id"] for s in await _sessions(client, relay)}
    assert result["kernel_id"] not in await _kernel_ids(client, relay)


async def _run_notebook_cell(
    page: Page, log: KernelAnsweredLog, relay: RunningRelay, jupyter: JupyterServer
) -> None:
    # `reset`: start from an empty workspace, so the launcher shows no matter what an
    # earlier run left open (JupyterLab keeps the layout in ~/.jupyter/lab/workspaces).
    response = await page.goto(f"{relay.base_url}lab?reset&token={RELAY_TOKEN}")
    assert response is not None
    redirect = response.request.redirected_from
    assert redirect is not None, "the relay did not redirect the ?token= navigation"
    assert RELAY_TOKEN in redirect.url
    assert response.status == 200
    html = await response.text()
    assert "jupyter-config-data" in html, "not JupyterLab's page"
    assert jupyter.token not in html, "the backend's token is in the page the relay served"

    await run_cell_in_new_notebook(page, log, CODE, re.compile(r"^\s*42\s*$"), BROWSER_TIMEOUT_MS)
    # Saving is a PUT with the page's Origin and _xsrf: the relay's Origin check and
    # the backend's XSRF check both have to let it through.
    name = await save_notebook(page, f"relay-{secrets.token_hex(4)}.ipynb")
    await wait_saved(jupyter.root / name, CODE, BROWSER_TIMEOUT_MS)

    assert RELAY_TOKEN not in page.url, f"the relay's token stayed in the address bar: {page.url}"
    assert re.match(rf"{re.escape(relay.base_url)}lab(/|$)", page.url), page.url
    ws_base = "ws" + relay.base_url.removeprefix("http")
    assert all(url.startswith(ws_base) for url in log.websockets), log.websockets
    content = await page.content()
    assert jupyter.token not in content, "the backend's token is in the live page"
    for cookie in await page.context.cookies():
        assert RELAY_TOKEN not in cookie["value"], f"cookie {cookie['name']} holds the token"
        assert jupyter.token not in cookie["value"], f"cookie {cookie['name']} holds a token"


async def test_jupyterlab_in_chromium(
    relay: RunningRelay,
    jupyter: JupyterServer,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """JupyterLab loads through the relay, a new notebook runs a cell and shows 42."""
    need_chromium()
    before = {s["id"] for s in await _sessions(client, relay)}
    log = KernelAnsweredLog()
    try:
        async with open_page(log, BROWSER_TIMEOUT_MS, tmp_path / "jupyterlab-failure.png") as page:
            await _run_notebook_cell(page, log, relay, jupyter)
        assert not log.failed, f"requests failed through the relay{log}"
    finally:
        # Stop the kernel the notebook started on the session-wide Jupyter server.
        for session in await _sessions(client, relay):
            if session["id"] not in before:
                async with client.delete(f"{relay.base_url}api/sessions/{session['id']}"):
                    pass
