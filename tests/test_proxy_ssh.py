"""`/proxy/<backend>:<port>/`: an app on an `ssh` backend's machine, through its SSH connection.

The "remote" is this machine's real sshd (tests/sshd.py) with its "remote" Jupyter; the
app (tests/webapps.py) listens on 127.0.0.1, as an app on a remote machine's loopback
would. The relay is told only the SSH alias and must ride its SSH connection: while a
response streams or a websocket is open, the process connected to the app is sshd or the
relay's helper on the remote side, never the relay. With sshd gone, the answer is a 502
that names the backend. An ssh backend is a Jupyter over SSH: on a machine without one
the backend is down, and its ports answer the same 502 that says how to start one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import WatchedRelay
from .proxying import (
    PREFIX_HEADERS,
    assert_json_error,
    clients_of,
    fetch,
    proxy_relay,
    seen,
    url,
)
from .servers import JupyterServer, free_port
from .sshd import Sshd, far_sides, running_sshd, start_remote_jupyter
from .webapps import WebApp, run_webapp

GPU = "gpu"
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("proxy-ssh")) as server:
        yield server


@pytest.fixture(scope="module")
def remote(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """The "remote" Jupyter, announced only in sshd's runtime directory."""
    server = start_remote_jupyter(sshd, tmp_path_factory.mktemp("proxy-ssh-root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_sshd(sshd: Sshd, remote: JupyterServer) -> Iterator[Sshd]:
    """The module's sshd, running again after the test whatever happened."""
    yield sshd
    if not sshd.running():
        sshd.restart()


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def relay(live_sshd: Sshd) -> AsyncIterator[WatchedRelay]:
    async with proxy_relay([live_sshd.backend_arg(GPU)], timeout=60) as running:
        yield running


def only_the_remote_side(sshd: Sshd, port: int) -> set[str]:
    """The names of what holds connections to `port`; fails unless all are on the SSH side.

    The first connection to a port is sshd's (a direct-tcpip channel: sshd's forwarding
    policy decides), later ones the relay's helper's there (test_ssh_far_side.py).
    """
    clients = clients_of(port)
    assert clients, f"nothing is connected to port {port}"
    helpers = {p.pid for p in far_sides(sshd)}
    strays = {
        pid: name
        for pid, name in clients.items()
        if not name.startswith("sshd") and pid not in helpers
    }
    assert not strays, (strays, clients)
    return set(clients.values())


async def test_http_reaches_the_remote_loopback_over_ssh(
    live_sshd: Sshd, relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    prefix = f"/proxy/{GPU}:{app.port}"
    echo = seen(await fetch(client, "GET", url(relay.base, f"{prefix}/over/ssh?q=%2F")))
    assert (echo.path, echo.query) == ("/over/ssh", "q=%2F"), echo.raw
    assert echo.prefix_headers() == dict.fromkeys(PREFIX_HEADERS, prefix), echo.raw
    body = b"uploaded over ssh " * 20_000
    echo = seen(await fetch(client, "PUT", url(relay.base, f"{prefix}/put"), data=body))
    assert echo.size == len(body), echo.raw
    absolute = seen(await fetch(client, "GET", url(relay.base, f"/proxy/absolute{prefix[6:]}/x")))
    assert absolute.path == f"/proxy/absolute/{GPU}:{app.port}/x", absolute.raw
    assert absolute.prefix_headers() == dict.fromkeys(PREFIX_HEADERS), absolute.raw

    # While a response streams, the app's peer is sshd: the bytes came through SSH.
    target = url(relay.base, f"{prefix}/_sse?n=3&gap=0.5")
    async with asyncio.timeout(30), client.get(target) as resp:
        assert resp.status == 200, await resp.text()
        first = await resp.content.readline()
        assert first.startswith(b"data: "), first
        only_the_remote_side(live_sshd, app.port)
        rest = await resp.content.read()
    assert rest.count(b"data: ") == 2, rest


async def test_websocket_reaches_the_remote_loopback_over_ssh(
    live_sshd: Sshd, relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    target = url(relay.base, f"/proxy/{GPU}:{app.port}/_ws")
    async with (
        asyncio.timeout(30),
        client.ws_connect(target, protocols=("first.v1", "chosen.v2")) as ws,
    ):
        assert ws.protocol == "chosen.v2"
        await ws.send_str("info")
        info = json.loads((await ws.receive()).data)
        assert info["path"] == "/_ws", info
        only_the_remote_side(live_sshd, app.port)
        await ws.send_bytes(b"\x00binary\xff")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00binary\xff")
        await ws.send_str("close:4321")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4321), msg


async def test_sshd_down_is_a_502_naming_the_backend(
    relay: WatchedRelay, live_sshd: Sshd, app: WebApp, client: aiohttp.ClientSession
) -> None:
    path = f"/proxy/{GPU}:{app.port}/x"
    assert seen(await fetch(client, "GET", url(relay.base, path))).path == "/x"
    served = len(app.requests)
    await asyncio.to_thread(live_sshd.stop)
    got = await fetch(client, "GET", url(relay.base, path), headers=JSON, timeout=30)
    assert_json_error(got, 502, rf"\b{GPU}\b")
    assert got.seconds < 15, got.seconds
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        async with client.ws_connect(url(relay.base, f"/proxy/{GPU}:{app.port}/_ws")):
            pass
    assert caught.value.status == 502, caught.value
    assert len(app.requests) == served  # nothing reached the app another way


async def test_nothing_listening_on_the_remote_is_a_502(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    got = await fetch(client, "GET", url(relay.base, f"/proxy/{GPU}:{port}/"), headers=JSON)
    assert_json_error(got, 502, rf"\b{port}\b")


async def test_a_machine_without_jupyter_says_what_to_do(
    tmp_path: Path, app: WebApp, client: aiohttp.ClientSession
) -> None:
    """An ssh backend is a Jupyter over SSH: without one it is down, its ports too, and says why."""
    with running_sshd(tmp_path) as bare:
        async with proxy_relay([bare.backend_arg(GPU)], timeout=60) as relay:
            path = f"/proxy/{GPU}:{app.port}/no/jupyter/here"
            got = await fetch(client, "GET", url(relay.base, path), headers=JSON)
            assert_json_error(got, 502, rf"backend '{GPU}'.*no Jupyter server runs.*start=true")
            assert app.requests == []
            got = await fetch(client, "GET", url(relay.base, "/api/contents"), headers=JSON)
            assert_json_error(got, 502, rf"\b{GPU}\b")
