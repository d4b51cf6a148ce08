"""Named apps: `[apps.<name>]` in the config file, started by the relay on first use.

The app is tests/webapps.py run as a program (or `sh` for the failures); the relay
chooses its port, passes `{port}` and `{base_url}` in its command and environment,
waits until the port accepts connections, serves it at `/apps/<name>/`, lists it in
`/relay/api/status`, answers 503 quoting the app's last output when it exits or never
listens, starts it again after it died, and stops its whole process group with itself.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from .echo_app import Echo, run_echo
from .proxying import (
    AUTH,
    PREFIX_HEADERS,
    assert_json_error,
    fetch,
    gone,
    proxy_command,
    proxy_relay,
    relay_toml,
    seen,
    url,
    wait_until_gone,
    webapp_command,
)
from .servers import free_port
from .waiting import eventually

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@pytest.fixture
async def backend() -> AsyncIterator[Echo]:
    async with run_echo() as echo:
        yield echo


def lab(backend: Echo) -> list[str]:
    return [f"lab=http://127.0.0.1:{backend.port}/"]


async def app_status(client: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    got = await fetch(client, "GET", url(base, "/relay/api/status"), headers=AUTH)
    assert got.status == 200, got.text
    apps = {a["name"]: a for a in got.json["apps"]}
    assert name in apps, got.json
    entry: dict[str, Any] = apps[name]
    assert {"name", "url", "state", "pid", "port", "error"} <= entry.keys(), entry
    return entry


async def app_stopped(client: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    """The echo app's status entry once the relay no longer says it is running."""
    entry = await app_status(client, base, "echo")
    return entry if entry["state"] != "running" else None


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def listens_on(pid: int, port: int) -> bool:
    """Does `pid` or one of its children listen on `port`?"""
    proc = psutil.Process(pid)
    for candidate in (proc, *proc.children(recursive=True)):
        for conn in candidate.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                return True
    return False


async def test_starts_on_first_request_and_serves_under_its_prefix(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    starts = tmp_path / "starts"
    command = f"echo started >> {starts} && exec {shlex.join(webapp_command())}"
    toml = relay_toml(
        echo={
            "command": ["sh", "-c", command],
            "environment": {"WEBAPP_BASE": "{base_url}", "WEBAPP_PORT": "{port}"},
            "timeout": 20,
        }
    )
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        base = relay.base
        entry = await app_status(client, base, "echo")
        assert entry["url"].rstrip("/").endswith("/apps/echo"), entry
        assert (entry["state"], entry["pid"]) == ("stopped", None), entry
        assert not starts.exists()

        # Five requests at once: one start, all served.
        answers = await asyncio.gather(
            *(fetch(client, "GET", url(base, f"/apps/echo/some/where?x={i}")) for i in range(5))
        )
        for index, got in enumerate(answers):
            echo = seen(got)
            assert (echo.path, echo.query) == ("/some/where", f"x={index}"), echo.raw
            assert echo.prefix_headers() == dict.fromkeys(PREFIX_HEADERS, "/apps/echo"), echo.raw
        assert starts.read_text() == "started\n"

        entry = await app_status(client, base, "echo")
        assert entry["state"] == "running" and entry["error"] is None, entry
        pid, port = entry["pid"], entry["port"]
        assert isinstance(pid, int) and isinstance(port, int), entry
        assert "webapps.py" in " ".join(psutil.Process(pid).cmdline())
        assert listens_on(pid, port), (pid, port)
        assert seen(answers[0]).header("Host") == f"localhost:{port}"
        assert seen(answers[0]).raw["pid"] == pid

        # {base_url} and {port} in its environment.
        for name, value in (("WEBAPP_BASE", "/apps/echo/"), ("WEBAPP_PORT", str(port))):
            got = await fetch(client, "GET", url(base, f"/apps/echo/_env?name={name}"))
            assert got.status == 200 and got.json["value"] == value, (name, got.text)

        # The bare name redirects to the slash; the app's redirects stay under the prefix.
        got = await fetch(client, "GET", url(base, "/apps/echo"))
        assert (got.status, got.location) == (301, "/apps/echo/"), (got.status, got.headers)
        got = await fetch(client, "GET", url(base, "/apps/echo/_redirect?location=/t%3Fa%3D1"))
        assert (got.status, got.location) == (302, "/apps/echo/t?a=1"), got.headers

        # Its websocket, with the app's subprotocol.
        target = url(base, "/apps/echo/_ws")
        async with client.ws_connect(target, protocols=("first.v1", "chosen.v2")) as ws:
            assert ws.protocol == "chosen.v2"
            await ws.send_bytes(b"\x01\x02")
            assert (await ws.receive(timeout=10)).data == b"\x01\x02"

        assert starts.read_text() == "started\n"  # still the same process
    await wait_until_gone([pid], what=f"app {pid} gone with the relay")


async def test_absolute_url_app_sees_the_whole_path(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    # `command` as one string, split as a shell would.
    toml = relay_toml(whole={"command": shlex.join(webapp_command()), "absolute_url": True})
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        echo = seen(await fetch(client, "GET", url(relay.base, "/apps/whole/x/y?z=1")))
        assert (echo.path, echo.query) == ("/apps/whole/x/y", "z=1"), echo.raw
        assert echo.prefix_headers() == dict.fromkeys(PREFIX_HEADERS), echo.raw
        location = "/apps/whole/next"
        got = await fetch(
            client, "GET", url(relay.base, f"/apps/whole/_redirect?location={location}")
        )
        assert got.location == location, got.headers


async def test_an_app_that_exits_is_a_503_quoting_its_last_output(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    script = "echo early-line; echo '<script>boom-marker</script>'; echo last-words >&2; exit 3"
    toml = relay_toml(boom={"command": ["sh", "-c", script], "timeout": 20})
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        got = await fetch(client, "GET", url(relay.base, "/apps/boom/"), headers=JSON)
        assert_json_error(got, 503, "boom-marker", "last-words", r"\b3\b")
        assert got.seconds < 10, got.seconds
        entry = await app_status(client, relay.base, "boom")
        assert entry["state"] == "failed" and entry["pid"] is None, entry
        assert entry["error"], entry
        # A browser gets the page, with the app's output escaped.
        page = await fetch(client, "GET", url(relay.base, "/apps/boom/x"), headers=HTML)
        assert page.status == 503 and page.content_type == "text/html", (page.status, page.text)
        assert page.headers.get("X-Content-Type-Options") == "nosniff", page.headers
        assert "&lt;script&gt;boom-marker&lt;/script&gt;" in page.text, page.text
        assert "<script" not in page.text.lower(), page.text


async def test_an_app_that_never_listens_is_a_503_after_its_timeout(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    pids = tmp_path / "pids"
    # sh and its child sleep: both in the app's process group, both to be stopped.
    script = f"echo waiting-marker; sleep 60 & echo $$ $! > {pids}; wait"
    toml = relay_toml(mute={"command": ["sh", "-c", script], "timeout": 2})
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        got = await fetch(client, "GET", url(relay.base, "/apps/mute/"), headers=JSON)
        assert_json_error(got, 503, "waiting-marker", r"\b2\b")
        assert 1.8 < got.seconds < 10, got.seconds
        started = pids_in(pids)
        assert len(started) == 2, started
        await wait_until_gone(started, what="the app's processes gone after its timeout")
        entry = await app_status(client, relay.base, "mute")
        assert entry["state"] == "failed" and entry["error"], entry


async def test_a_dead_app_is_started_again_on_the_next_request(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    toml = relay_toml(echo={"command": webapp_command()})
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        first = seen(await fetch(client, "GET", url(relay.base, "/apps/echo/one")))
        old = first.raw["pid"]
        os.kill(old, signal.SIGKILL)
        await wait_until_gone([old], what=f"the killed app {old} gone")
        # Once the relay has seen it go (its status says so), the next request starts it.
        await eventually(
            lambda: app_stopped(client, relay.base),
            timeout=10,
            what="the relay sees the app gone",
            ignoring=(),  # app_status's assertions fail at once
        )
        second = seen(await fetch(client, "GET", url(relay.base, "/apps/echo/two")))
        assert second.path == "/two", second.raw
        assert second.raw["pid"] != old
        entry = await app_status(client, relay.base, "echo")
        assert entry["state"] == "running" and entry["pid"] == second.raw["pid"], entry


async def test_the_command_stops_its_apps_when_it_stops(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """The real command, a fixed port, and an app that is a child of the app's shell.

    A second child ignores SIGTERM: the relay's SIGKILL to the group must end it too.
    """
    children = tmp_path / "children"
    port = free_port()
    script = (
        f"{shlex.join(webapp_command())} & echo $$ $! > {children}; "
        f"(trap '' TERM; exec sleep 300) & echo $! >> {children}; wait"
    )
    config = tmp_path / "relay.toml"
    config.write_text(
        relay_toml(
            {"proxy_deny_ports": [22]},
            fixed={"command": ["sh", "-c", script], "port": port, "timeout": 20},
        )
    )
    proc = await asyncio.to_thread(
        proxy_command, ["--config", str(config), "--backend", *lab(backend)], tmp_path
    )
    try:
        echo = seen(await fetch(client, "GET", url(proc.base, "/apps/fixed/x")))
        assert echo.path == "/x" and echo.header("Host") == f"localhost:{port}", echo.raw
        entry = await app_status(client, proc.base, "fixed")
        assert (entry["state"], entry["port"]) == ("running", port), entry
        pids = pids_in(children)
        assert len(pids) == 3 and echo.raw["pid"] == pids[1], (echo.raw, pids)
        assert all(not gone(pid) for pid in pids)
    finally:
        code = await asyncio.to_thread(proc.stop)
    assert code == 0, proc.logs()
    await wait_until_gone(pids, what=f"{pids} gone with the relay: {proc.logs()}")


async def test_a_dead_leaders_group_is_stopped_on_restart_and_with_the_relay(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """The app's leader dies, its background child lives on: both stops must end that child.

    The shell starts a `sleep` in the background and execs the web app, so the app is the
    group's leader and the sleep a member; killing the leader leaves the member behind.
    """
    pids = tmp_path / "pids"
    script = f"sleep 1000 & echo $! >> {pids}; exec {shlex.join(webapp_command())}"
    toml = relay_toml(echo={"command": ["sh", "-c", script], "timeout": 20})
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:

        async def leader_dies() -> int:
            leader = seen(await fetch(client, "GET", url(relay.base, "/apps/echo/x"))).raw["pid"]
            os.kill(leader, signal.SIGKILL)
            await eventually(
                lambda: app_stopped(client, relay.base),
                timeout=10,
                what="the relay sees the app gone",
                ignoring=(),  # app_status's assertions fail at once
            )
            return int(pids_in(pids)[-1])

        first = await leader_dies()
        assert not gone(first), "the background child should still run before any stop"
        # The next request starts the app again, ending what was left of the first run.
        await leader_dies()
        await wait_until_gone([first], 3, what=f"sleep {first} gone with the restart")
        second = pids_in(pids)[-1]
        assert not gone(second)
    await wait_until_gone([second], 3, what=f"sleep {second} gone with the relay")


async def test_stopping_an_app_twice_is_harmless(tmp_path: Path) -> None:
    from jupyter_relay.errors import BackendStartError
    from jupyter_relay.proxy.apps import App
    from jupyter_relay.proxy.appspec import AppSpec

    app = App(AppSpec("echo", tuple(webapp_command())), connect_timeout=5)
    await app.ensure()
    assert app.proc is not None
    pid = app.proc.pid
    await asyncio.gather(app.stop(), app.stop())
    await app.stop()
    assert gone(pid) and app.state == "stopped"
    with pytest.raises(BackendStartError, match="shutting down"):
        await app.ensure()


async def test_a_fixed_port_held_by_another_process_is_a_503_not_a_stranger(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    from .webapps import run_webapp

    ran = tmp_path / "ran"
    async with run_webapp() as stranger:
        command = f"touch {ran}; exec {shlex.join(webapp_command())}"
        toml = relay_toml(fixed={"command": ["sh", "-c", command], "port": stranger.port})
        async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
            got = await fetch(client, "GET", url(relay.base, "/apps/fixed/x"), headers=JSON)
            assert_json_error(
                got, 503, f"port {stranger.port}", "already in use", r"\[apps\.fixed\]"
            )
            entry = await app_status(client, relay.base, "fixed")
            assert entry["state"] == "failed" and "already in use" in entry["error"], entry
        assert not stranger.requests, stranger.requests
        assert not ran.exists(), "the app's command should not run on a taken port"


async def test_an_app_never_gets_the_relays_or_backends_secrets(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import RELAY_TOKEN

    backend_token = "backend-secret-0123456789abcdef"
    monkeypatch.setenv("LAB_TOKEN", backend_token)  # read by the backend: token_env=
    monkeypatch.setenv("MY_COPY", RELAY_TOKEN)  # the relay's token under a name of one's own
    monkeypatch.setenv("NOTEBOOK_URL", f"http://lab/?token={backend_token}")
    monkeypatch.setenv("JUPYTER_RELAY_EXTRA", "relay-setting")
    monkeypatch.setenv("KEEP_ME", "visible")
    toml = relay_toml(echo={"command": webapp_command(), "environment": {"MINE": "given"}})
    spec = [f"lab=http://127.0.0.1:{backend.port}/?token_env=LAB_TOKEN"]
    async with proxy_relay(spec, toml=toml, workdir=tmp_path) as relay:

        async def env(name: str) -> str | None:
            got = await fetch(client, "GET", url(relay.base, f"/apps/echo/_env?name={name}"))
            assert got.status == 200, got.text
            value: str | None = got.json["value"]
            return value

        for name in ("LAB_TOKEN", "MY_COPY", "NOTEBOOK_URL", "JUPYTER_RELAY_EXTRA"):
            assert await env(name) is None, name
        assert (await env("KEEP_ME"), await env("MINE")) == ("visible", "given")
