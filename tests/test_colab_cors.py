"""Colab as it connects since 2025: a cross-origin page calling the REST API directly.

A real Chromium page served from another loopback address (127.0.0.2: another
origin) runs Colab's flow with credentialed `fetch`: the build-info probe, the
kernelspecs, `POST /api/sessions`, a kernel websocket with `?token=`, an
execute, `DELETE` of the session. It runs against jupyter_server configured as
Colab's instructions say (`allow_origin`, `allow_credentials`) and against the
relay started with `--allow-origin`, in the same test, and the results must
agree; then against a relay whose primary is reached over SSH, and with a
kernel of a second backend chosen by its prefixed kernelspec.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .browser import PageLog, open_page
from .conftest import RELAY_TOKEN, start_relay
from .servers import JupyterServer, free_port, start_jupyter
from .sshd import Sshd, running_sshd, start_remote_jupyter

PAGE_HOST = "127.0.0.2"
TIMEOUT_MS = 60_000

# What Colab's page does, as a script the page runs: every call credentialed and cross-origin.
FLOW = """
async ({base, token, spec}) => {
  const q = `token=${token}`;
  const opts = (extra) => ({credentials: 'include', ...extra});
  const out = {};
  try {
    out.buildInfo = (await fetch(`${base}api/colab/build-info?${q}`, opts())).status;
  } catch (e) {
    out.buildInfo = 'unreadable';  // no CORS fields on the answer: the page cannot read it
  }
  const specs = await fetch(`${base}api/kernelspecs?${q}`, opts());
  out.specs = Object.keys((await specs.json()).kernelspecs).sort();
  const created = await fetch(`${base}api/sessions?${q}`, opts({
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({path: 'colab.ipynb', type: 'notebook', name: '', kernel: {name: spec}}),
  }));
  out.create = created.status;
  const session = await created.json();
  const id = 'colab-' + Math.random().toString(16).slice(2);
  const ws = new WebSocket(
    `${base.replace('http', 'ws')}api/kernels/${session.kernel.id}/channels?${q}`);
  out.text = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no output within 45 s')), 45000);
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onopen = () => ws.send(JSON.stringify({
      header: {msg_id: id, username: '', session: 'colab', msg_type: 'execute_request',
               version: '5.3', date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
      content: {code: 'print(6 * 7)', silent: false, store_history: false,
                user_expressions: {}, allow_stdin: false, stop_on_error: true},
    }));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.msg_type === 'stream' && msg.parent_header.msg_id === id) {
        clearTimeout(timer);
        resolve(msg.content.text);
      }
    };
  });
  ws.close();
  const deleted = await fetch(`${base}api/sessions/${session.id}?${q}`, opts({method: 'DELETE'}));
  out.delete = deleted.status;
  const left = await (await fetch(`${base}api/sessions?${q}`, opts())).json();
  out.left = left.filter((s) => s.id === session.id).length;
  return out;
}
"""


@pytest.fixture(scope="module")
def page_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def origin(page_port: int) -> str:
    return f"http://{PAGE_HOST}:{page_port}"


@contextlib.asynccontextmanager
async def page_server(port: int) -> AsyncIterator[None]:
    """The foreign origin: a blank page on 127.0.0.2, from which the flow runs."""

    async def blank(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>notebook</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, PAGE_HOST, port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def colab_jupyter(tmp_path_factory: pytest.TempPathFactory, origin: str) -> Iterator[JupyterServer]:
    """jupyter_server as Colab's instructions configure it."""
    server = start_jupyter(
        tmp_path_factory.mktemp("colab-root"),
        tmp_path_factory.mktemp("colab-jupyter"),
        extra_args=(f"--ServerApp.allow_origin={origin}", "--ServerApp.allow_credentials=True"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A second backend, whose kernels the relay mixes in as `b--<name>`."""
    server = start_jupyter(
        tmp_path_factory.mktemp("second-root"), tmp_path_factory.mktemp("second-jupyter")
    )
    yield server
    server.stop()


async def run_flow(port: int, base: str, token: str, spec: str, shot: Path) -> dict[str, Any]:
    log = PageLog()
    async with page_server(port), open_page(log, TIMEOUT_MS, shot) as page:
        await page.goto(f"http://{PAGE_HOST}:{port}/")
        result: dict[str, Any] = await page.evaluate(
            FLOW, {"base": base, "token": token, "spec": spec}
        )
        assert not [f for f in log.failed if "build-info" not in f], str(log)
        return result


def agreed(result: dict[str, Any]) -> None:
    # The relay's 404 in Jupyter's shape, readable by the page, after which Colab goes on.
    assert result["buildInfo"] == 404, result
    assert result["create"] == 201, result
    assert result["text"] == "42\n", result
    assert result["delete"] == 204, result
    assert result["left"] == 0, result


async def test_the_flow_runs_against_the_relay_as_against_jupyter_server(
    colab_jupyter: JupyterServer,
    second: JupyterServer,
    origin: str,
    page_port: int,
    tmp_path: Path,
) -> None:
    direct = await run_flow(
        page_port, colab_jupyter.base, colab_jupyter.token, "python3", tmp_path / "direct.png"
    )
    # jupyter_server's 404 for a path it has no handler for carries no CORS fields: the page
    # cannot read it (Colab catches that and goes on). The relay's can be read.
    assert direct["buildInfo"] == "unreadable", direct
    agreed({**direct, "buildInfo": 404})
    running = await start_relay(
        [f"lab={colab_jupyter.backend_arg}", f"b={second.backend_arg}"], allow_origin=[origin]
    )
    try:
        relayed = await run_flow(
            page_port, running.base_url, RELAY_TOKEN, "python3", tmp_path / "relay.png"
        )
        agreed(relayed)
        assert relayed == {**direct, "specs": relayed["specs"], "buildInfo": 404}
        assert set(direct["specs"]) < set(relayed["specs"])
        assert "b--python3" in relayed["specs"]
        # A kernel of the second backend, chosen by its prefixed kernelspec.
        mixed = await run_flow(
            page_port, running.base_url, RELAY_TOKEN, "b--python3", tmp_path / "mixed.png"
        )
        agreed(mixed)
    finally:
        await running.stop()


async def test_the_flow_runs_with_an_ssh_primary(
    tmp_path_factory: pytest.TempPathFactory, origin: str, page_port: int, tmp_path: Path
) -> None:
    work = tmp_path_factory.mktemp("colab-ssh")
    root = work / "remote-root"
    root.mkdir()
    sshd: Sshd
    with running_sshd(work) as sshd:
        remote = start_remote_jupyter(sshd, root)
        try:
            running = await start_relay([sshd.backend_arg()], allow_origin=[origin])
            try:
                result = await run_flow(
                    page_port, running.base_url, RELAY_TOKEN, "python3", tmp_path / "ssh.png"
                )
                agreed(result)
            finally:
                await running.stop()
        finally:
            remote.stop()


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_preflights_and_foreign_origins_as_a_browser_would_see_them(
    colab_jupyter: JupyterServer, origin: str
) -> None:
    running = await start_relay([f"lab={colab_jupyter.backend_arg}"], allow_origin=[origin])
    base = running.base_url
    try:
        async with aiohttp.ClientSession() as anon:  # a preflight carries no credentials
            async with anon.options(
                base + "api/sessions", headers={"Origin": origin, **PREFLIGHT}
            ) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == origin
                assert resp.headers["Access-Control-Allow-Credentials"] == "true"
                assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
            foreign = "http://127.0.0.3:9"
            async with anon.options(
                base + "api/sessions", headers={"Origin": foreign, **PREFLIGHT}
            ) as resp:
                assert resp.status == 403
                assert f"--allow-origin {foreign}" in (await resp.json())["message"]
                assert "Access-Control-Allow-Origin" not in resp.headers
            token = {"Authorization": f"token {RELAY_TOKEN}"}
            async with anon.get(base + "api/status", headers={"Origin": foreign, **token}) as resp:
                assert resp.status == 200
                assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
            async with anon.get(base + "api/status", headers={"Origin": origin, **token}) as resp:
                # jupyter_server sent its own CORS fields too: the relay's replace them.
                assert resp.headers.getall("Access-Control-Allow-Origin") == [origin]
            async with anon.get(
                base + "relay/api/status", headers={"Origin": origin, **token}
            ) as resp:
                assert resp.status == 200  # the relay's own answers carry them too
                assert resp.headers["Access-Control-Allow-Origin"] == origin
    finally:
        await running.stop()
    down = await start_relay([f"lab=http://127.0.0.1:{free_port()}/"], allow_origin=[origin])
    try:
        async with aiohttp.ClientSession() as anon:
            headers = {"Origin": origin, "Authorization": f"token {RELAY_TOKEN}"}
            async with anon.get(down.base_url + "api/contents", headers=headers) as resp:
                assert resp.status == 502
                assert resp.headers["Access-Control-Allow-Origin"] == origin
                assert "lab" in json.loads(await resp.text())["message"]
    finally:
        await down.stop()
