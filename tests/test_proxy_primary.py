"""`/proxy/<port>/` reaches the port where the primary's kernels run (issue 21).

- `ssh` primary (a real sshd, tests/sshd.py): `/proxy/<port>/` is the remote
  machine's port, through the SSH connection: what holds the app's connections
  is sshd or the relay's helper there, never the relay; `/proxy/localhost:<port>/`
  reaches another app on this machine, from the relay itself. HTTP, a websocket
  with the app's subprotocol and server-sent events; the `jupyter-relay` command
  says where `/proxy/<port>/` leads. A Dask-style link: a kernel there starts a web
  server and prints `/proxy/<port>/status`; Chromium opens it through the relay.
- `hub` primary (a real JupyterHub, tests/hub.py) whose user servers have
  jupyter-server-proxy: `/proxy/<port>/` is sent on as
  `/user/<name>/proxy/<port>/`, the user's server's own port proxy answers (what
  holds the app's connection is that server), from an HTTP client and a Chromium
  page; a user whose server has it disabled gets a 404 that says so and names the
  ways out. Neither the relay's token nor its cookie reaches any app.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from playwright.async_api import expect

from jupyter_relay.auth import cookie_value

from .browser import PageLog, open_page
from .conftest import RELAY_TOKEN
from .hub import NO_PROXY, Hub, start_hub
from .kernel_client import run_code, start_kernel
from .needs import need_chromium
from .proxying import PREFIX_HEADERS, assert_json_error, clients_of, fetch, proxy_relay, seen, url
from .servers import JupyterServer, RelayProcess, start_relay_process
from .sshd import Sshd, running_sshd, start_remote_jupyter
from .test_proxy_ssh import only_the_remote_side
from .webapps import WebApp, run_webapp

TIMEOUT_MS = 60_000
USER = "alice"  # her server has jupyter-server-proxy (installed in the venv, enabled)
NO_PROXY_USER = NO_PROXY  # hers has it disabled (tests/hub.py's spawn hook)


def assert_no_relay_secret(app: WebApp) -> None:
    for request in app.requests:
        text = json.dumps(request)
        assert RELAY_TOKEN not in text and cookie_value(RELAY_TOKEN) not in text, request


# --- an ssh primary -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("primary-ssh")) as server:
        yield server


@pytest.fixture(scope="module")
def remote(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = start_remote_jupyter(sshd, tmp_path_factory.mktemp("primary-ssh-root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ssh_relay(
    sshd: Sshd, remote: JupyterServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    """The `jupyter-relay` command with the ssh backend as its only backend: its primary."""
    proc = start_relay_process(
        ["--port", "0", "--token", RELAY_TOKEN, "--backend", sshd.backend_arg("gpu")],
        tmp_path_factory.mktemp("primary-ssh-relay"),
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def remote_app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def local_app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


async def test_ssh_primary_ports_are_the_remote_machines(
    sshd: Sshd,
    ssh_relay: RelayProcess,
    remote_app: WebApp,
    local_app: WebApp,
    client: aiohttp.ClientSession,
) -> None:
    said = ssh_relay.logs()
    assert re.search(
        r"/proxy/<port>/ leads to the ports of backend 'gpu' \(its machine's localhost, over SSH\)",
        said,
    ), said
    base = ssh_relay.base
    prefix = f"/proxy/{remote_app.port}"
    echo = seen(await fetch(client, "GET", url(base, f"{prefix}/over/ssh?q=%2F")))
    assert (echo.path, echo.query) == ("/over/ssh", "q=%2F"), echo.raw
    assert echo.prefix_headers() == dict.fromkeys(PREFIX_HEADERS, prefix), echo.raw
    # Server-sent events stream through SSH: the app's peer is on the remote side.
    async with asyncio.timeout(30), client.get(url(base, f"{prefix}/_sse?n=3&gap=0.5")) as resp:
        assert resp.status == 200, await resp.text()
        first = await resp.content.readline()
        assert first.startswith(b"data: "), first
        only_the_remote_side(sshd, remote_app.port)
        assert (await resp.content.read()).count(b"data: ") == 2
    # A websocket with the app's subprotocol.
    target = url(base, f"{prefix}/_ws")
    async with asyncio.timeout(30), client.ws_connect(target, protocols=("chosen.v2",)) as ws:
        assert ws.protocol == "chosen.v2"
        await ws.send_str("hello over ssh")
        assert (await ws.receive()).data == "hello over ssh"
        only_the_remote_side(sshd, remote_app.port)
    # This machine's ports, explicitly: the relay itself connects.
    local = f"/proxy/localhost:{local_app.port}"
    async with asyncio.timeout(30), client.get(url(base, f"{local}/_sse?n=2&gap=0.5")) as resp:
        assert resp.status == 200, await resp.text()
        await resp.content.readline()
        assert set(clients_of(local_app.port)) == {ssh_relay.proc.pid}
        await resp.content.read()
    assert remote_app.paths() == ["/over/ssh", "/_sse", "/_ws"], remote_app.paths()
    assert local_app.paths() == ["/_sse"], local_app.paths()
    assert_no_relay_secret(remote_app)
    assert_no_relay_secret(local_app)
    # The status says where /proxy/<port>/ leads.
    async with client.get(base + "relay/api/status") as resp:
        status = await resp.json()
    assert "the ports of backend 'gpu'" in status["port_proxy"]["port_home"], status


DASH = """
import functools, http.server, pathlib, socketserver, tempfile, threading
root = pathlib.Path(tempfile.mkdtemp())
(root / "status").mkdir()
(root / "status" / "index.html").write_text("<title>dashboard</title><h1 id=k>workers: 4</h1>")
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
server = socketserver.TCPServer(("127.0.0.1", 0), handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"/proxy/{server.server_address[1]}/status")
"""


async def test_a_dashboard_link_printed_by_a_kernel_on_the_ssh_primary_opens(
    ssh_relay: RelayProcess, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    need_chromium()
    base = ssh_relay.base
    kernel_id = await start_kernel(client, base)
    try:
        link = await run_code(client, base, kernel_id, DASH)
        assert re.fullmatch(r"/proxy/\d+/status", link), link
        log = PageLog()
        async with open_page(log, TIMEOUT_MS, tmp_path / "dashboard.png") as page:
            await page.goto(f"{base.rstrip('/')}{link}?token={RELAY_TOKEN}")
            await expect(page.locator("#k")).to_have_text("workers: 4")
            # http.server redirected /status to /status/: the relay kept the prefix.
            assert page.url.startswith(f"{base.rstrip('/')}{link}/"), page.url
        assert not log.failed, f"requests failed through the relay{log}"
    finally:
        await client.delete(f"{base}api/kernels/{kernel_id}")


# --- a hub primary ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    server = start_hub(tmp_path_factory.mktemp("primary-hub"))
    try:
        for user in (USER, NO_PROXY_USER):
            server.create_user(user)
        yield server
    finally:
        server.stop()


def hub_backend(hub: Hub, user: str, work: Path) -> str:
    token, _ = hub.issue_token(user, "port proxy tests")
    path = work / f"{user}.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return hub.backend_arg("cluster", user, token_file=path)


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


def singleuser_pids(hub: Hub, user: str) -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "jupyterhub-singleuser" in cmdline and proc.info["cwd"] == str(hub.home(user)):
            pids.add(proc.pid)
    return pids


async def test_hub_primary_ports_go_to_the_users_own_port_proxy(
    hub: Hub, app: WebApp, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    need_chromium()
    async with proxy_relay([hub_backend(hub, USER, tmp_path)], timeout=90) as relay:
        prefix = f"/proxy/{app.port}"
        echo = seen(await fetch(client, "GET", url(relay.base, f"{prefix}/over/hub?q=1")))
        assert (echo.path, echo.query) == ("/over/hub", "q=1"), echo.raw
        # The user's server's jupyter-server-proxy answered, under /user/<name>/.
        forwarded = dict(echo.headers)
        context = forwarded.get("X-Proxycontextpath") or forwarded.get("X-ProxyContextPath")
        assert context == f"/user/{USER}/proxy/{app.port}", echo.raw
        target = url(relay.base, f"{prefix}/_ws")
        async with asyncio.timeout(30), client.ws_connect(target, protocols=("chosen.v2",)) as ws:
            await ws.send_str("info")
            assert json.loads((await ws.receive()).data)["path"] == "/_ws"
            holders = set(clients_of(app.port))
            assert holders and holders <= singleuser_pids(hub, USER), holders
            assert os.getpid() not in holders
        async with client.get(relay.base + "relay/api/status") as resp:
            status = await resp.json()
        assert "the port proxy of backend 'cluster'" in status["port_proxy"]["port_home"], status
        log = PageLog()
        start = f"{relay.base.rstrip('/')}{prefix}/site/_page?token={RELAY_TOKEN}"
        async with open_page(log, TIMEOUT_MS, tmp_path / "hub-proxy-page.png") as page:
            await page.goto(start)
            status_text = page.locator("#status")
            await expect(status_text).to_have_text("echo: hello from the page (chosen.v2)")
        assert not log.failed, f"requests failed through the relay{log}"
    assert "/site/_page.js" in app.paths(), app.paths()
    assert_no_relay_secret(app)


async def test_a_hub_server_without_a_port_proxy_gets_a_404_that_says_so(
    hub: Hub, app: WebApp, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with proxy_relay([hub_backend(hub, NO_PROXY_USER, tmp_path)], timeout=90) as relay:
        target = url(relay.base, f"/proxy/{app.port}/x")
        got = await fetch(client, "GET", target, headers={"Accept": "application/json"})
        message = assert_json_error(got, 404, "no port proxy of its own", "jupyter-server-proxy")
        assert f"/proxy/localhost:{app.port}/" in message, message
        # This machine's port stays one request away.
        echo = seen(await fetch(client, "GET", url(relay.base, f"/proxy/localhost:{app.port}/y")))
        assert echo.path == "/y", echo.raw
    assert app.paths() == ["/y"], app.paths()
