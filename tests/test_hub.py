"""The `hub` backend against a real JupyterHub on loopback.

JupyterHub (tests/hub.py) runs with configurable-http-proxy in front, TLS with a
certificate for the name `jupyterhub` only, the DummyAuthenticator and
SimpleLocalProcessSpawner; the relay is given a user, a token file, the CA and that name.
Covered: the Jupyter API and a kernel over the v1 websocket subprotocol, JupyterLab in
Chromium, a stopped server started on demand with the Hub's progress on stderr, a named
server, a wrong CA, a wrong TLS name, a revoked token and a token file rewritten while the
relay runs, a server culled mid-session, a request that arrives in many small pieces, the
seed's environment variables, and the Hub going down. And each failure a user can meet
gives its own message: a spawn the Hub reports failed or timed out, the relay's own
--start-timeout, a token lacking a scope, a token revoked while the relay runs, a user the
Hub does not have; concurrent requests after a cull start the server once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from playwright.async_api import Page

from jupyter_relay.app import HEALTH_INTERVAL
from jupyter_relay.backends import HubBackend
from jupyter_relay.backends.hub import TOKEN_POLL

from .answers import Answer, assert_error, call
from .browser import (
    KernelAnsweredLog,
    open_page,
    run_cell_in_new_notebook,
    save_notebook,
    wait_saved,
)
from .conftest import RELAY_TOKEN, WatchedRelay, watched_relay
from .hub import (
    BROKEN,
    BROKEN_MESSAGE,
    SLOWPOKE,
    SLOWPOKE_HTTP_TIMEOUT,
    SLUGGISH,
    STUBBORN,
    TLS_NAME,
    UNCACHED,
    Hub,
    start_hub,
)
from .kernel_client import V1, execute, run_code, start_kernel
from .needs import missing, need_chromium
from .servers import BIN, _child_env, free_port, start_relay_process
from .waiting import eventually

NAME = "cluster"  # the backend's name in every relay here: messages must say it
USER = "alice"
GPU = "gpu"  # a named server of USER's
# Starting the relay may start a server: the Hub spawns one in a few seconds here.
START_BOUND = 90.0
# A request while something is wrong must fail within this, not hang.
FAIL_BOUND = 15.0
# A rewritten token file is picked up within this (and the server started if it must be).
TOKEN_BOUND = 30.0
# ... and when the relay is failing for the old token, tried at once: within this after.
FRESH_TOKEN_BOUND = 5.0
# A culled server, or a Hub back up, serves again within this.
RECOVERY_BOUND = 60.0
BROWSER_TIMEOUT_MS = 60_000
CODE = "print(6*7)"


# --- helpers ------------------------------------------------------------------------------


def hub_relay(*backends: str, **flags: str) -> contextlib.AbstractAsyncContextManager[WatchedRelay]:
    return watched_relay(list(backends), timeout=START_BOUND, **flags)


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


async def hub_status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    answer = await call(session, "GET", base + "relay/api/status")
    assert answer.status == 200, answer.text
    found = {b["name"]: b for b in answer.body["backends"]}
    assert NAME in found, answer.body
    entry: dict[str, Any] = found[NAME]
    assert entry["kind"] == "hub", entry
    return entry


async def kernelspecs(session: aiohttp.ClientSession, base: str) -> Answer:
    return await call(session, "GET", base + "api/kernelspecs", timeout=FAIL_BOUND)


async def assert_serves(session: aiohttp.ClientSession, base: str) -> None:
    answer = await kernelspecs(session, base)
    assert answer.status == 200, answer.text
    assert "python3" in answer.body["kernelspecs"], answer.body


async def wait_serving(session: aiohttp.ClientSession, base: str, bound: float) -> list[Answer]:
    """Poll /api/kernelspecs until it answers 200; return the answers before."""
    seen: list[Answer] = []

    async def serves() -> bool:
        answer = await kernelspecs(session, base)
        if answer.status != 200:
            seen.append(answer)
        assert answer.status == 200, [(a.status, a.text[:300]) for a in seen[-3:]]
        return True

    await eventually(serves, timeout=bound, interval=0.2, what=f"{base} serves again")
    return seen


async def delete_kernel(session: aiohttp.ClientSession, base: str, kernel_id: str) -> None:
    answer = await call(session, "DELETE", f"{base}api/kernels/{kernel_id}")
    assert answer.status == 204, answer.text


def server_prefix(user: str, server: str = "") -> str:
    return f"/user/{user}/{server + '/' if server else ''}"


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def hub(hub_work: Path) -> Iterator[Hub]:
    """JupyterHub for the module, with USER; tests that stop it start it again."""
    server = start_hub(hub_work)
    try:
        server.create_user(USER)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def token(hub: Hub) -> str:
    """A valid API token of USER's with the default scopes, issued by the Hub's API."""
    issued, _ = hub.issue_token(USER, "the module's token")
    return issued


@pytest.fixture(scope="module")
def token_file(token: str, hub_work: Path) -> Path:
    """The file that holds `token`, as the relay is given it."""
    return write_token(hub_work / f"{USER}.token", token)


@pytest.fixture
def live_hub(hub: Hub) -> Iterator[Hub]:
    """The module's Hub, running again after the test whatever happened."""
    yield hub
    if not hub.running():
        hub.restart()


# --- 1. the Jupyter API and a kernel ------------------------------------------------------


async def test_kernelspecs_and_a_kernel_over_v1_websocket(
    hub: Hub, token: str, token_file: Path, client: aiohttp.ClientSession
) -> None:
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        await assert_serves(client, relay.base)
        entry = await hub_status(client, relay.base)
        assert entry["reachable"] is True and entry["error"] is None, entry
        assert token not in json.dumps(entry)
        assert token not in "\n".join(relay.progress)

        kernel_id = await start_kernel(client, relay.base)
        try:
            url = f"{relay.base}api/kernels/{kernel_id}/channels"
            async with asyncio.timeout(60), client.ws_connect(url, protocols=(V1,)) as ws:
                assert ws.protocol == V1
                out, reply = await execute(ws, CODE)
                assert reply["content"]["status"] == "ok" and out == "42\n", (out, reply)
            # The kernel runs under USER's server behind the Hub, which knows it.
            where = await run_code(
                client,
                relay.base,
                kernel_id,
                'import os; print(os.environ["JUPYTERHUB_SERVICE_PREFIX"])',
            )
            assert where.strip() == server_prefix(USER)
            status, body = await asyncio.to_thread(
                hub.request, "GET", f"user/{USER}/api/kernels/{kernel_id}", token=token
            )
            assert status == 200 and body["id"] == kernel_id, (status, body)
        finally:
            await delete_kernel(client, relay.base, kernel_id)

    # Without a user in the URI, the relay asks the Hub whose token it is.
    async with hub_relay(hub.backend_arg(NAME, None, token_file=token_file)) as relay:
        await assert_serves(client, relay.base)


# --- 2. JupyterLab in Chromium ------------------------------------------------------------


async def run_notebook_cell(
    page: Page, log: KernelAnsweredLog, relay: WatchedRelay, hub: Hub, token: str
) -> None:
    response = await page.goto(f"{relay.base}lab?reset&token={RELAY_TOKEN}")
    assert response is not None
    assert response.status == 200
    html = await response.text()
    assert "jupyter-config-data" in html, "not JupyterLab's page"
    assert token not in html, "the Hub token is in the page the relay served"

    await run_cell_in_new_notebook(page, log, CODE, re.compile(r"^\s*42\s*$"), BROWSER_TIMEOUT_MS)
    # Saving is a PUT from the page: it lands in USER's home behind the Hub.
    name = await save_notebook(page, f"relay-{secrets.token_hex(4)}.ipynb")
    await wait_saved(hub.home(USER) / name, CODE, BROWSER_TIMEOUT_MS)

    # Everything went through the relay: the page, its websockets; no token leaked.
    assert page.url.startswith(relay.base), page.url
    assert RELAY_TOKEN not in page.url, page.url
    ws_base = "ws" + relay.base.removeprefix("http")
    assert log.websockets and all(url.startswith(ws_base) for url in log.websockets), log.websockets
    assert token not in await page.content(), "the Hub token is in the live page"
    for cookie in await page.context.cookies():
        assert token not in cookie["value"], f"cookie {cookie['name']} holds the Hub token"


async def test_jupyterlab_in_chromium_runs_a_cell(
    hub: Hub, token: str, token_file: Path, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    need_chromium()
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        log = KernelAnsweredLog()
        try:
            async with open_page(log, BROWSER_TIMEOUT_MS, tmp_path / "hub-lab-failure.png") as page:
                await run_notebook_cell(page, log, relay, hub, token)
        finally:
            answer = await call(client, "GET", relay.base + "api/sessions")
            for session in answer.body if answer.status == 200 else []:
                await call(client, "DELETE", f"{relay.base}api/sessions/{session['id']}")


# --- 3. start on demand, with the Hub's progress ------------------------------------------


async def test_stopped_server_is_started_with_progress_on_stderr(
    hub: Hub, token_file: Path, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    if hub.server(USER) is not None:
        await asyncio.to_thread(hub.stop_server, USER)
    assert hub.server(USER) is None
    backend = hub.backend_arg(NAME, USER, token_file=token_file)
    proc = await asyncio.to_thread(
        start_relay_process, ["--port", "0", "--token", RELAY_TOKEN, "--backend", backend], hub_work
    )
    try:
        # The URL is printed once the backend is ready: the server runs, the Hub says so.
        model = hub.server(USER)
        assert model is not None and model["ready"], model
        await assert_serves(client, proc.base)
        # One line per event of the Hub's progress stream, before it said it serves.
        said = proc.logs().partition(f"serving {NAME}")[0]
        lines = re.findall(rf"^(?:jupyter-relay: )?backend '{NAME}': (\d+)% (.*)$", said, re.M)
        assert lines, proc.logs()
        percents = [int(p) for p, _ in lines]
        assert percents == sorted(percents), lines
        last_percent, last_message = lines[-1]
        assert last_percent == "100", lines
        assert re.search(rf"ready.*{re.escape(server_prefix(USER))}", last_message), lines
    finally:
        proc.stop()


# --- 4. a named server --------------------------------------------------------------------


async def test_named_server_is_started_and_served(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    if hub.server(USER, GPU) is not None:
        await asyncio.to_thread(hub.stop_server, USER, GPU)
    try:
        backend = hub.backend_arg(NAME, USER, token_file=token_file, server=GPU)
        async with hub_relay(backend) as relay:
            model = hub.server(USER, GPU)
            assert model is not None and model["ready"], model
            assert model["url"] == server_prefix(USER, GPU), model
            await assert_serves(client, relay.base)
            kernel_id = await start_kernel(client, relay.base)
            try:
                where = await run_code(
                    client,
                    relay.base,
                    kernel_id,
                    'import os; print(os.environ["JUPYTERHUB_SERVICE_PREFIX"])',
                )
                assert where.strip() == server_prefix(USER, GPU)
            finally:
                await delete_kernel(client, relay.base, kernel_id)
    finally:
        await asyncio.to_thread(hub.stop_server, USER, GPU)


# --- 5. TLS -------------------------------------------------------------------------------


async def test_wrong_ca_names_the_server_name_and_the_ca_file(
    hub: Hub, token_file: Path, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    other = hub_work / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    backend = hub.backend_arg(NAME, USER, token_file=token_file, ca_file=other)
    async with hub_relay(backend) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME, TLS_NAME)
        assert re.search(r"verif", message, re.IGNORECASE), message
        assert str(other) in message, message


@pytest.mark.parametrize(
    ("tls_name", "named"),
    [("not-the-hub", "not-the-hub"), (None, "127.0.0.1")],
    ids=["wrong-name", "address-only"],
)
async def test_wrong_tls_server_name_is_a_mismatch_naming_it(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession, tls_name: str | None, named: str
) -> None:
    backend = hub.backend_arg(NAME, USER, token_file=token_file, tls_server_name=tls_name)
    async with hub_relay(backend) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME, named)
        assert re.search(r"match", message, re.IGNORECASE), message


# --- 6. tokens ----------------------------------------------------------------------------


async def test_revoked_token_then_a_rewritten_token_file(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    token, token_id = hub.issue_token(USER, "to be revoked")
    hub.revoke_token(USER, token_id)
    path = write_token(hub_work / f"revoked-{secrets.token_hex(4)}.token", token)
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=path)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert str(path) in message, message
        assert hub.token_page in message, message
        assert token not in message, message
        # It said so while starting too, once.
        told = [line for line in relay.progress if str(path) in line]
        assert len(told) == 1 and hub.token_page in told[0], relay.progress

        # A fresh token in the same file: the relay reads it again, no restart.
        fresh, _ = hub.issue_token(USER, "the rewritten file")
        write_token(path, fresh)
        await wait_serving(client, relay.base, TOKEN_BOUND)


# --- 7. culling ---------------------------------------------------------------------------


async def test_culled_server_answers_503_then_is_started_again(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        await assert_serves(client, relay.base)
        await asyncio.to_thread(hub.stop_server, USER)
        answer = await kernelspecs(client, relay.base)
        assert_error(answer, 503, NAME)
        assert "server stopped by the hub; starting it again" in answer.body["message"], answer.body
        seen = await wait_serving(client, relay.base, RECOVERY_BOUND)
        # Meanwhile: JSON errors from the relay, never the Hub's login page.
        for early in seen:
            assert early.content_type == "application/json", (early.status, early.text[:300])
            assert early.status in (502, 503), (early.status, early.text[:300])
        model = hub.server(USER)
        assert model is not None and model["ready"], model


async def test_culled_server_stays_stopped_with_start_server_never(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    if hub.server(USER) is None:
        await asyncio.to_thread(hub.start_server, USER)
    backend = hub.backend_arg(NAME, USER, token_file=token_file)
    async with hub_relay(backend, start_server="never") as relay:
        await assert_serves(client, relay.base)
        await asyncio.to_thread(hub.stop_server, USER)
        for _ in range(3):
            answer = await kernelspecs(client, relay.base)
            message = assert_error(answer, 503, NAME)
            assert re.search(r"\bstopped\b", message), message
            assert "starting it again" not in message, message
            # Time is the measure here: a start the relay began in the background would
            # show in the Hub within these 1.5 s; nothing else can be waited on.
            await asyncio.sleep(0.5)
        # Nobody started it.
        assert hub.server(USER) is None, hub.server(USER)


async def test_concurrent_requests_after_a_cull_start_the_server_once(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        await assert_serves(client, relay.base)
        await asyncio.to_thread(hub.stop_server, USER)
        offset = hub.log.stat().st_size
        answers = await asyncio.gather(*(kernelspecs(client, relay.base) for _ in range(8)))
        for answer in answers:
            assert_error(answer, 503, NAME)
        await wait_serving(client, relay.base, RECOVERY_BOUND)
        answers = await asyncio.gather(*(kernelspecs(client, relay.base) for _ in range(8)))
        assert [a.status for a in answers] == [200] * 8, [a.text[:200] for a in answers]
    with hub.log.open("rb") as log:
        log.seek(offset)
        said = log.read().decode(errors="replace")
    starts = re.findall(rf"POST /hub/api/users/{USER}/server\b", said)
    assert len(starts) == 1, said[-3000:]


async def test_server_the_hub_is_still_stopping_is_started_once_stopped(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    """A cull the relay sees while the Hub is still stopping the server (pending "stop")."""
    hub.create_user(STUBBORN)
    token, _ = hub.issue_token(STUBBORN)
    path = write_token(hub_work / f"{STUBBORN}.token", token)
    async with hub_relay(hub.backend_arg(NAME, STUBBORN, token_file=path)) as relay:
        await assert_serves(client, relay.base)
        # Not hub.stop_server: it waits for the server to be gone, and the relay restarts it.
        stopping = asyncio.create_task(
            asyncio.to_thread(hub.api, "DELETE", f"users/{STUBBORN}/server", expect=(202, 204))
        )

        async def pending_stop() -> bool:
            model = await asyncio.to_thread(hub.server, STUBBORN)
            if (model or {}).get("pending") == "stop":
                return True
            assert not stopping.done(), f"the stop ended with no pending stop seen: {model}"
            return False

        await eventually(
            pending_stop, timeout=FAIL_BOUND, what="the Hub's pending stop", ignoring=()
        )
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 503, NAME, STUBBORN)
        assert "stopped by the hub; starting it again" in message, message
        seen = await wait_serving(client, relay.base, RECOVERY_BOUND)
        for early in seen:
            message = assert_error(early, 503, NAME)
            assert "stopped by the hub; starting it again" in message, message
        await stopping
        model = hub.server(STUBBORN)
        assert model is not None and model["ready"], model


async def test_a_redirect_of_the_users_own_server_is_not_taken_for_a_cull(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    """The server's own redirect into a folder named `hub` is passed on, not a 503."""
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        answer = await call(
            client, "PUT", relay.base + "api/contents/hub", json_body={"type": "directory"}
        )
        assert answer.status in (200, 201), answer.text
        answer = await call(
            client,
            "PUT",
            relay.base + "api/contents/hub/notes.txt",
            json_body={"type": "file", "format": "text", "content": "in a folder named hub\n"},
        )
        assert answer.status in (200, 201), answer.text
        # Jupyter answers a trailing slash with a redirect to the path without it.
        url = relay.base + "api/contents/hub/notes.txt/"
        async with client.get(url, allow_redirects=False) as resp:
            text = await resp.text()
            location = resp.headers.get("Location", "")
        assert resp.status in (301, 302), (resp.status, text[:300])
        assert location.endswith("/api/contents/hub/notes.txt"), location
        assert location.startswith("/") and not location.startswith("//"), location
        # Followed, it is the file; and the server was never taken for stopped.
        answer = await call(client, "GET", url)
        assert answer.status == 200, answer.text
        assert answer.body["content"] == "in a folder named hub\n", answer.body
        await assert_serves(client, relay.base)


async def test_a_503_of_an_app_behind_the_users_server_is_passed_on(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    """An app under the server's /proxy/<port>/ (jupyter-server-proxy) that says 503."""
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        missing("jupyter-server-proxy is not installed (the bench extra)")

    async def warming_up(request: web.Request) -> web.Response:
        return web.Response(status=503, text="warming up")

    app = web.Application()
    app.router.add_get("/{tail:.*}", warming_up)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
            answer = await call(client, "GET", f"{relay.base}proxy/{port}/")
            assert (answer.status, answer.text) == (503, "warming up"), answer.text[:300]
            await assert_serves(client, relay.base)
    finally:
        await runner.cleanup()


# --- 8. a request in small pieces ---------------------------------------------------------


async def test_request_in_many_small_writes_arrives_intact(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    # In folders whose names a byte-rewriting proxy takes for the API's and the hub's prefix.
    folder = f"api/user/{USER}/api"
    name = f"{folder}/split-{secrets.token_hex(4)}.txt"
    content = "GET /api/ HTTP/1.1\r\n not a request: /api/kernels and /user/x/api/ in a file\n" * 3
    body = json.dumps({"type": "file", "format": "text", "content": content}).encode()
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        parts = folder.split("/")
        for depth in range(1, len(parts) + 1):
            url = f"{relay.base}api/contents/{'/'.join(parts[:depth])}"
            answer = await call(client, "PUT", url, json_body={"type": "directory"})
            assert answer.status in (200, 201), answer.text
        head = (
            f"PUT /api/contents/{name} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{relay.running.port}\r\n"
            f"Authorization: token {RELAY_TOKEN}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        raw = head + body
        async with asyncio.timeout(60):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.running.port)
            try:
                for offset in range(0, len(raw), 3):
                    writer.write(raw[offset : offset + 3])
                    await writer.drain()
                    await asyncio.sleep(0.002)  # a slow client on purpose: bytes in pieces
                response = await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()
        status_line, _, rest = response.partition(b"\r\n")
        assert re.match(rb"HTTP/1\.1 20[01] ", status_line), response[:500]
        assert name.encode() in rest.partition(b"\r\n\r\n")[2], response[:1000]

        answer = await call(client, "GET", f"{relay.base}api/contents/{name}?content=1")
        assert answer.status == 200, answer.text
        assert answer.body["content"] == content
    on_disk = (await asyncio.to_thread((hub.home(USER) / name).read_bytes)).decode()
    assert on_disk == content


# --- 9. the seed's environment ------------------------------------------------------------


async def test_seed_environment_without_backend_flag(hub: Hub, token: str, hub_work: Path) -> None:
    port = free_port()
    env = {
        "JUPYTER_SERVER_IP_OR_NAME": "127.0.0.1",
        "JUPYTER_SERVER_PORT": str(hub.port),
        "JUPYTER_USERNAME": USER,
        "JUPYTER_CLUSTER_CA_CERT": str(hub.ca_file),
        "JUPYTER_SERVER_NAME": TLS_NAME,
        "JUPYTER_PROXY_PORT": str(port),
        "JUPYTERHUB_API_TOKEN": token,
    }
    proc = await asyncio.to_thread(start_relay_process, [], hub_work, env=env)
    try:
        assert proc.port == port, proc.url
        headers = {"Authorization": f"token {proc.token}"} if proc.token else {}
        async with aiohttp.ClientSession(headers=headers) as session:
            await assert_serves(session, f"http://127.0.0.1:{port}/")
    finally:
        proc.stop()


# --- 10. the Hub goes down ----------------------------------------------------------------


async def test_hub_down_is_a_502_naming_the_backend_then_recovers(
    live_hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    async with hub_relay(live_hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        await assert_serves(client, relay.base)
        await asyncio.to_thread(live_hub.stop)
        answer = await kernelspecs(client, relay.base)
        assert answer.seconds < FAIL_BOUND, answer.seconds
        message = assert_error(answer, 502, NAME)
        assert re.search(r"unreachable|refused", message, re.IGNORECASE), message
        # The Hub back (it stopped the user's server on its way down): the relay serves again.
        await asyncio.to_thread(live_hub.restart)
        await wait_serving(client, relay.base, RECOVERY_BOUND)


# --- 11. what a user meets when a spawn goes wrong ----------------------------------------


async def test_spawn_failed_gives_the_hubs_message(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    hub.create_user(BROKEN)
    token, _ = hub.issue_token(BROKEN)
    path = write_token(hub_work / f"{BROKEN}.token", token)
    async with hub_relay(hub.backend_arg(NAME, BROKEN, token_file=path)) as relay:
        told = [line for line in relay.progress if BROKEN_MESSAGE in line]
        assert told, relay.progress
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 503, NAME, BROKEN)
        assert BROKEN_MESSAGE in message, message
        assert f"{hub.url}hub/home" in message, message


async def test_spawn_timed_out_on_the_hub_gives_the_hubs_message(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    hub.create_user(SLOWPOKE)
    token, _ = hub.issue_token(SLOWPOKE)
    path = write_token(hub_work / f"{SLOWPOKE}.token", token)
    async with hub_relay(hub.backend_arg(NAME, SLOWPOKE, token_file=path)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 503, NAME, SLOWPOKE)
        assert f"didn't respond in {SLOWPOKE_HTTP_TIMEOUT} seconds" in message, message


async def test_relay_start_timeout_says_how_long_and_what_to_do(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    hub.create_user(SLUGGISH)
    token, _ = hub.issue_token(SLUGGISH)
    path = write_token(hub_work / f"{SLUGGISH}.token", token)
    started = time.monotonic()
    async with hub_relay(
        hub.backend_arg(NAME, SLUGGISH, token_file=path), start_timeout="2"
    ) as relay:
        assert time.monotonic() - started < FAIL_BOUND
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 504, NAME, SLUGGISH)
        assert "within 2 s" in message and "--start-timeout" in message, message
        assert f"{hub.url}hub/spawn-pending/{SLUGGISH}" in message, message


# --- 12. tokens that may not do what the relay needs --------------------------------------

SCOPES_LACKING_SERVERS = ["read:users!user", "read:servers!user", "access:servers!user"]


@pytest.mark.parametrize(
    ("scopes", "needed"),
    [(SCOPES_LACKING_SERVERS, "servers"), (["access:servers!user"], "read:servers")],
    ids=["cannot-start", "cannot-read"],
)
async def test_token_missing_a_scope_says_which(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession, scopes: list[str], needed: str
) -> None:
    user = "carol"  # never has a server: the relay must start it, or read it first
    hub.create_user(user)
    model = hub.api("POST", f"users/{user}/tokens", {"scopes": scopes}, expect=(201,))
    path = write_token(hub_work / f"{user}-{secrets.token_hex(4)}.token", model["token"])
    async with hub_relay(hub.backend_arg(NAME, user, token_file=path)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert re.search(rf"lacks the scope\b.*\b{re.escape(needed)}\b", message), message
        assert str(path) in message and hub.token_page in message, message
        assert "refused" not in message, message
    assert hub.server(user) is None


async def test_token_that_may_not_use_the_server_says_so(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    """It may read and start the server, not talk to it: the server's 403 is explained."""
    if hub.server(USER) is None:
        await asyncio.to_thread(hub.start_server, USER)
    scopes = ["read:users!user", "read:servers!user", "servers!user"]
    model = hub.api("POST", f"users/{USER}/tokens", {"scopes": scopes}, expect=(201,))
    path = write_token(hub_work / f"no-access-{secrets.token_hex(4)}.token", model["token"])
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=path)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert "lacks the scope to use" in message and "access:servers" in message, message
        assert str(path) in message and hub.token_page in message, message
        answer = await call(client, "GET", relay.base + "lab")
        assert answer.status == 502 and "access:servers" in answer.text, answer.text[:500]


async def test_user_the_hub_does_not_have_says_so(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    async with hub_relay(hub.backend_arg(NAME, "nobody", token_file=token_file)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME, "nobody")
        assert re.search(r"\bno user\b", message), message
        assert "user@" in message.lower() or "before @" in message, message


async def test_token_revoked_while_serving_names_its_file(
    hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    """The user's server refuses a revoked token (soon: UNCACHED): the relay says why."""
    hub.create_user(UNCACHED)
    token, token_id = hub.issue_token(UNCACHED, "revoked while serving")
    path = write_token(hub_work / f"serving-{secrets.token_hex(4)}.token", token)
    async with hub_relay(hub.backend_arg(NAME, UNCACHED, token_file=path)) as relay:
        await assert_serves(client, relay.base)
        hub.revoke_token(UNCACHED, token_id)

        async def refused() -> Answer | None:
            answer = await kernelspecs(client, relay.base)
            return answer if answer.status != 200 else None

        answer = await eventually(  # the server caches the Hub's word for a second
            refused, timeout=FAIL_BOUND, interval=0.2, what="the revoked token refused"
        )
        for _ in range(2):
            message = assert_error(answer, 502, NAME)
            assert str(path) in message and hub.token_page in message, message
            assert token not in message, message
            answer = await kernelspecs(client, relay.base)
        # The page too: the relay's error page saying so, not the Hub's login page.
        answer = await call(client, "GET", relay.base + "lab")
        assert answer.status == 502 and answer.content_type == "text/html", answer.text
        assert str(path) in answer.text and "hub refused the API token" in answer.text
        fresh, _ = hub.issue_token(UNCACHED, "after the revoked one")
        write_token(path, fresh)
        # Read again and tried at once, with no request to make it try (nor the health
        # check, every HEALTH_INTERVAL).
        backend = relay.running.relay.backends[NAME]
        assert isinstance(backend, HubBackend)
        assert TOKEN_POLL + FRESH_TOKEN_BOUND < HEALTH_INTERVAL
        await eventually(
            lambda: backend.problem is None,
            timeout=TOKEN_POLL + FRESH_TOKEN_BOUND,
            interval=0.1,
            what="the fresh token taken (backend.problem None)",
        )
        await assert_serves(client, relay.base)


async def test_refused_token_from_the_environment_says_to_export_and_restart(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession
) -> None:
    token, token_id = hub.issue_token(USER, "revoked, in the environment")
    hub.revoke_token(USER, token_id)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    async with hub_relay(hub.backend_arg(NAME, USER)) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert "environment variable JUPYTERHUB_API_TOKEN" in message, message
        assert hub.token_page in message and "restart the relay" in message, message
        assert token not in message, message


async def test_a_url_that_is_not_the_hubs_says_so(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    """The hub's base prefix left out or mistyped: the relay does not call it a missing user."""
    backend = hub.backend_arg(NAME, USER, token_file=token_file).replace("/?", "/jhub/?", 1)
    async with hub_relay(backend) as relay:
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert "is that the JupyterHub's URL (with its base prefix)?" in message, message
        assert "no user" not in message, message


# --- 13. a hub that demands a client certificate ------------------------------------------


@pytest.fixture(scope="module")
def cert_hub(hub_work: Path) -> Iterator[Hub]:
    """A second Hub, whose proxy refuses clients without a certificate of its CA's."""
    server = start_hub(hub_work, client_certs=True)
    try:
        server.create_user(USER)
        yield server
    finally:
        server.stop()


async def test_client_certificate_is_presented_to_the_hub(
    cert_hub: Hub, hub_work: Path, client: aiohttp.ClientSession
) -> None:
    assert cert_hub.client_pem is not None
    token, _ = cert_hub.issue_token(USER)
    path = write_token(hub_work / f"cert-{secrets.token_hex(4)}.token", token)
    backend = cert_hub.backend_arg(
        NAME, USER, token_file=path, client_cert=str(cert_hub.client_pem)
    )
    async with hub_relay(backend) as relay:
        await assert_serves(client, relay.base)
        kernel_id = await start_kernel(client, relay.base)
        try:
            url = f"{relay.base}api/kernels/{kernel_id}/channels"
            async with asyncio.timeout(60), client.ws_connect(url, protocols=(V1,)) as ws:
                out, reply = await execute(ws, CODE)
                assert reply["content"]["status"] == "ok" and out == "42\n", (out, reply)
        finally:
            await delete_kernel(client, relay.base, kernel_id)


@pytest.mark.parametrize("given", ["none", "another-ca"])
async def test_missing_or_foreign_client_certificate_says_to_give_one(
    cert_hub: Hub, hub_work: Path, client: aiohttp.ClientSession, given: str
) -> None:
    token, _ = cert_hub.issue_token(USER)
    path = write_token(hub_work / f"nocert-{secrets.token_hex(4)}.token", token)
    options: dict[str, Any] = {}
    if given == "another-ca":
        foreign = hub_work / f"foreign-{secrets.token_hex(4)}.pem"
        pem = trustme.CA().issue_cert("relay-tests-client").private_key_and_cert_chain_pem
        pem.write_to_path(str(foreign))
        options["client_cert"] = str(foreign)
    async with hub_relay(cert_hub.backend_arg(NAME, USER, token_file=path, **options)) as relay:
        told = [line for line in relay.progress if "client certificate" in line]
        assert told, relay.progress
        answer = await kernelspecs(client, relay.base)
        message = assert_error(answer, 502, NAME)
        assert "--client-cert" in message, message
        if given == "none":
            assert "requires a TLS client certificate" in message, message
        else:  # the hub's proxy resets the connection (or sends an alert)
            assert "refused" in message and options["client_cert"] in message, message


@pytest.mark.parametrize("source", ["environment", "empty-file"])
def test_no_token_is_one_line_saying_where_to_make_one(hub_work: Path, source: str) -> None:
    """No hub needed: the relay refuses to start, in one line, before it asks anything."""
    uri = "cluster=hub+https://alice@127.0.0.1:1/?tls_server_name=jupyterhub"
    empty = hub_work / "empty.token"
    if source == "empty-file":
        write_token(empty, "")
        uri += f"&token_file={empty}"
    env = _child_env()
    env.pop("JUPYTERHUB_API_TOKEN", None)
    data = hub_work / f"data-{source}"  # fresh: the relay would mint a token here
    env["JUPYTER_DATA_DIR"] = str(data)
    result = subprocess.run(
        [str(BIN / "jupyter-relay"), "--port", "0", "--backend", uri],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jupyter-relay: error: "), result.stderr
    assert "no hub API token" in lines[0] and "https://127.0.0.1:1/hub/token" in lines[0]
    if source == "empty-file":
        assert f"write it into {empty}" in lines[0], lines[0]
    else:
        assert "export JUPYTERHUB_API_TOKEN, or give token_file=" in lines[0], lines[0]
    assert not (data / "jupyter-relay" / "token").exists()  # a refused start keeps no token


async def test_cookies_of_the_users_server_get_the_relays_path(
    hub: Hub, token_file: Path, client: aiohttp.ClientSession
) -> None:
    """The server scopes its cookies (_xsrf) to /user/<name>/: the browser sees the relay's /."""
    async with hub_relay(hub.backend_arg(NAME, USER, token_file=token_file)) as relay:
        async with client.get(relay.base + "lab", allow_redirects=False) as resp:
            await resp.read()
            cookies = resp.headers.getall("Set-Cookie", [])
        assert resp.status == 200, resp.status
        assert cookies, dict(resp.headers)
        for cookie in cookies:
            attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
            paths = [a for a in attrs if a.startswith("path=")]
            assert paths in ([], ["path=/"]), cookie
            assert not any(a.startswith("domain=") for a in attrs), cookie
