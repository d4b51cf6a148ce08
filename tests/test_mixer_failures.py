"""The kernel mixer when things go wrong, and under concurrent use.

A backend killed mid-test, one frozen with SIGSTOP and thawed again, one answering
garbage JSON, unknown kernel ids and unknown backend prefixes, many clients starting,
listing and stopping kernels at once, ownership learnt by asking the backends (a fresh
relay and a second relay beside it), and a Kernel Gateway that refuses to list its
kernels. Real Jupyter servers and a real Kernel Gateway throughout; two tiny aiohttp
apps only where a real part cannot misbehave the way a test needs (garbage JSON, and a
backend that records what reaches it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from jupyter_relay.server import RunningRelay

from .answers import Answer, assert_error, call
from .conftest import RELAY_TOKEN, Mixed, start_relay
from .kernel_client import V1, execute
from .servers import (
    JupyterServer,
    KernelGateway,
    RelayProcess,
    start_jupyter,
    start_kernel_gateway,
    start_relay_process,
)
from .waiting import eventually

LIST_TIMEOUT = 1.0
# Lists must come back within --list-timeout plus this much, whatever the backends do.
LIST_MARGIN = 2.0
BACKEND_TIMEOUT = 2.0
ZERO_ID = "00000000-0000-0000-0000-000000000000"
WHERE = 'import os; print(os.environ["RELAY_TEST_BACKEND"])'

# Backend names that are no English word, so a message "names" one only on purpose.
DEAD = "xdead"
SLOW = "xslow"
JUNK = "xjunk"
SPY = "xspy"
NOLIST = "xnolist"
ODD = "xodd"
# A kernelspec field far larger than one read of a socket returns.
BIG_FIELD = 300_000


# --- helpers ------------------------------------------------------------------------------


def kernel_ids(answer: Answer) -> list[str]:
    assert answer.status == 200, answer.text
    assert isinstance(answer.body, list), answer.text
    return [k["id"] for k in answer.body]


async def list_kernels(session: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    answer = await call(session, "GET", base + "api/kernels")
    ids = kernel_ids(answer)
    assert len(ids) == len(set(ids)), ids
    return {k["id"]: k for k in answer.body}


async def start_kernel(session: aiohttp.ClientSession, base: str, name: str) -> str:
    answer = await call(session, "POST", base + "api/kernels", json_body={"name": name})
    assert answer.status == 201, answer.text
    assert answer.body["name"] == name, answer.body
    kernel_id: str = answer.body["id"]
    return kernel_id


async def status_of(session: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    answer = await call(session, "GET", base + "relay/api/status")
    assert answer.status == 200, answer.text
    backends = answer.body["backends"]
    return {b["name"]: b for b in backends}


async def where_it_runs(session: aiohttp.ClientSession, base: str, kernel_id: str) -> str:
    """Execute code on the kernel through `base`; return the backend it says it runs on."""
    async with asyncio.timeout(60):
        url = f"{base}api/kernels/{kernel_id}/channels"
        async with session.ws_connect(url, protocols=(V1,)) as ws:
            assert ws.protocol == V1
            out, reply = await execute(ws, WHERE)
    assert reply["content"]["status"] == "ok", reply
    return out.strip()


async def ws_refused(session: aiohttp.ClientSession, url: str) -> int:
    """The status of a refused websocket upgrade (fails if the upgrade succeeds)."""
    async with asyncio.timeout(30):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            ws = await session.ws_connect(url, protocols=(V1,))
            await ws.close()
    return info.value.status


async def delete_direct(server: JupyterServer | KernelGateway, kernel_id: str) -> None:
    """Shut a kernel down on its backend itself, so cleanup never depends on the relay."""
    headers = {"Authorization": f"token {server.token}"}
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            asyncio.timeout(30),
            session.delete(f"{server.base}api/kernels/{kernel_id}") as resp,
        ):
            assert resp.status in (204, 404), await resp.text()


async def backend_kernel_ids(server: JupyterServer | KernelGateway) -> set[str]:
    headers = {"Authorization": f"token {server.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        asyncio.timeout(30),
        session.get(f"{server.base}api/kernels") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return {k["id"] for k in await resp.json()}


@contextlib.asynccontextmanager
async def relay_over(backends: list[str], **flags: str) -> AsyncIterator[RunningRelay]:
    flags.setdefault("list_timeout", str(LIST_TIMEOUT))
    running = await start_relay(backends, **flags)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def api() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"token {RELAY_TOKEN}"}) as session:
        yield session


# --- backends of this module's own --------------------------------------------------------


@pytest.fixture(scope="module")
def own_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mixer-failures")


def own_jupyter(work: Path, name: str) -> JupyterServer:
    root = work / f"root-{name}"
    root.mkdir()
    return start_jupyter(root, work, env_extra={"RELAY_TEST_BACKEND": name})


@pytest.fixture(scope="module")
def dead_server(own_work: Path) -> Iterator[JupyterServer]:
    """A Jupyter server that its test kills; its kernels are ended with it."""
    server = own_jupyter(own_work, DEAD)
    kernels: list[psutil.Process] = []
    try:
        yield server
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            kernels = psutil.Process(server.proc.pid).children(recursive=True)
        server.stop()
        for proc in kernels:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture(scope="module")
def slow_server(own_work: Path) -> Iterator[JupyterServer]:
    """A Jupyter server that its test freezes with SIGSTOP and thaws with SIGCONT."""
    server = own_jupyter(own_work, SLOW)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.stop()


@pytest.fixture(scope="module")
def nolist_gateway(own_work: Path) -> Iterator[KernelGateway]:
    # The relay's starts carry an `env` (as GatewayClient's do): then the kernel sees
    # only the variables the gateway lists.
    env = {"RELAY_TEST_BACKEND": NOLIST, "KG_ENV_PROCESS_WHITELIST": "RELAY_TEST_BACKEND"}
    gateway = start_kernel_gateway(own_work, list_kernels=False, env_extra=env)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def odd_server(own_work: Path) -> Iterator[JupyterServer]:
    """A Jupyter server with a kernelspec of a large field, and one named `eg--python3`."""
    data = own_work / "odd-data"
    for name, extra in (("big", {"blob": "x" * BIG_FIELD}), ("eg--python3", {})):
        spec = data / "kernels" / name
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        model = {"argv": argv, "display_name": f"Odd {name}", "language": "python"}
        (spec / "kernel.json").write_text(json.dumps({**model, "metadata": extra}))
    root = own_work / f"root-{ODD}"
    root.mkdir()
    env = {"RELAY_TEST_BACKEND": ODD, "JUPYTER_PATH": str(data)}
    server = start_jupyter(root, own_work, env_extra=env)
    try:
        yield server
    finally:
        server.stop()


# --- fake backends: only what real ones cannot do -----------------------------------------


@dataclass
class FakeBackend:
    """A tiny aiohttp app on loopback that records the paths it is asked for."""

    url: str = ""
    seen: list[str] = field(default_factory=list)
    body: bytes = b"not json{"  # what a garbage answer says


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port: int = server.sockets[0].getsockname()[1]
    return runner, port


def status_ok(_: web.Request) -> web.Response:
    return web.json_response(
        {
            "started": "2024-01-01T00:00:00.000000Z",
            "last_activity": "2024-01-01T00:00:00.000000Z",
            "connections": 0,
            "kernels": 0,
        }
    )


@pytest.fixture
async def junk_backend() -> AsyncIterator[FakeBackend]:
    """A backend whose status is fine but whose lists and kernel answers are not JSON."""
    fake = FakeBackend()

    async def garbage(request: web.Request) -> web.Response:
        fake.seen.append(f"{request.method} {request.path}")
        return web.Response(status=200, body=fake.body, content_type="application/json")

    async def status(request: web.Request) -> web.Response:
        fake.seen.append(f"{request.method} {request.path}")
        return status_ok(request)

    app = web.Application()
    app.router.add_get("/api/status", status)
    app.router.add_route("*", "/{tail:.*}", garbage)
    runner, port = await serve(app)
    fake.url = f"http://127.0.0.1:{port}/?token=junk-token"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def spy_backend() -> AsyncIterator[FakeBackend]:
    """A well-behaved, empty backend that records every request reaching it."""
    fake = FakeBackend()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        fake.seen.append(f"{request.method} {request.path}")
        response: web.StreamResponse = await handler(request)
        return response

    def not_found(message: str) -> web.Response:
        return web.json_response({"message": message, "reason": None}, status=404)

    async def empty_list(_: web.Request) -> web.Response:
        return web.json_response([])

    async def kernelspecs(_: web.Request) -> web.Response:
        return web.json_response({"default": "python3", "kernelspecs": {}})

    async def kernel(request: web.Request) -> web.Response:
        return not_found(f"Kernel does not exist: {request.match_info['kid']}")

    async def anything(request: web.Request) -> web.Response:
        return not_found(f"nothing at {request.path}")

    async def status(request: web.Request) -> web.Response:
        return status_ok(request)

    app = web.Application(middlewares=[record])
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/kernels", empty_list)
    app.router.add_get("/api/sessions", empty_list)
    app.router.add_get("/api/kernelspecs", kernelspecs)
    app.router.add_route("*", "/api/kernels/{kid}", kernel)
    app.router.add_route("*", "/api/kernels/{kid}/{action:.*}", kernel)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner, port = await serve(app)
    fake.url = f"http://127.0.0.1:{port}/?token=spy-token"
    try:
        yield fake
    finally:
        await runner.cleanup()


# --- 1. a backend killed mid-test -----------------------------------------------------------


async def test_killed_backend_leaves_the_others_working(
    mixed: Mixed, dead_server: JupyterServer, api: aiohttp.ClientSession
) -> None:
    a_kernels: list[str] = []
    dead_kernel = ""
    kernel_procs: list[psutil.Process] = []
    async with relay_over([f"a={mixed.a.backend_arg}", f"{DEAD}={dead_server.backend_arg}"]) as r:
        base = r.base_url
        try:
            a_kernels.append(await start_kernel(api, base, "python3"))
            dead_kernel = await start_kernel(api, base, f"{DEAD}--python3")
            assert await where_it_runs(api, base, dead_kernel) == DEAD
            listed = await list_kernels(api, base)
            assert {a_kernels[0], dead_kernel} <= listed.keys()
            assert listed[dead_kernel]["name"] == f"{DEAD}--python3"

            kernel_procs = psutil.Process(dead_server.proc.pid).children(recursive=True)
            dead_server.proc.kill()
            dead_server.proc.wait(10)

            # Lists come back within the bound, with a's kernels and without the dead one's.
            answer = await call(api, "GET", base + "api/kernels")
            assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds
            ids = kernel_ids(answer)
            assert a_kernels[0] in ids and dead_kernel not in ids, ids
            answer = await call(api, "GET", base + "api/kernelspecs")
            assert answer.status == 200, answer.text
            assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds
            assert "python3" in answer.body["kernelspecs"]
            assert not [n for n in answer.body["kernelspecs"] if n.startswith(f"{DEAD}--")]
            answer = await call(api, "GET", base + "api/sessions")
            assert answer.status == 200 and isinstance(answer.body, list), answer.text
            assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds

            # Its kernel's requests get 502 naming it.
            kernel_url = f"{base}api/kernels/{dead_kernel}"
            for method, url in [
                ("GET", kernel_url),
                ("POST", kernel_url + "/restart"),
                ("POST", kernel_url + "/interrupt"),
                ("DELETE", kernel_url),
            ]:
                assert_error(await call(api, method, url), 502, DEAD)
            assert await ws_refused(api, kernel_url + "/channels") == 502
            start = await call(
                api, "POST", base + "api/kernels", json_body={"name": f"{DEAD}--python3"}
            )
            assert_error(start, 502, DEAD)

            # The other backend keeps starting, running and listing kernels.
            a_kernels.append(await start_kernel(api, base, "python3"))
            assert await where_it_runs(api, base, a_kernels[1]) == "a"
            listed = await list_kernels(api, base)
            assert set(a_kernels) <= listed.keys() and dead_kernel not in listed
            assert all(listed[k]["name"] == "python3" for k in a_kernels)

            status = await status_of(api, base)
            assert status[DEAD]["reachable"] is False, status[DEAD]
            assert status[DEAD]["error"], status[DEAD]
            assert status[DEAD]["kernels_error"], status[DEAD]
            assert status["a"]["reachable"] is True, status["a"]
            assert status["a"]["kernels_error"] is None, status["a"]
        finally:
            for kernel_id in a_kernels:
                await delete_direct(mixed.a, kernel_id)
            for proc in kernel_procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()


# --- 1b. a backend that stops answering, then comes back -------------------------------------


async def test_frozen_backend_times_out_and_comes_back(
    mixed: Mixed, slow_server: JupyterServer, api: aiohttp.ClientSession
) -> None:
    backends = [f"a={mixed.a.backend_arg}", f"{SLOW}={slow_server.backend_arg}"]
    a_kernel = slow_kernel = ""
    # The status page's health check waits --connect-timeout for an answer: keep it short.
    timeouts = {"backend_timeout": str(BACKEND_TIMEOUT), "connect_timeout": str(BACKEND_TIMEOUT)}
    async with relay_over(backends, **timeouts) as r:
        base = r.base_url
        try:
            a_kernel = await start_kernel(api, base, "python3")
            slow_kernel = await start_kernel(api, base, f"{SLOW}--python3")
            assert {a_kernel, slow_kernel} <= (await list_kernels(api, base)).keys()

            slow_server.proc.send_signal(signal.SIGSTOP)
            try:
                # It accepts connections but never answers: lists leave it out in time.
                for _ in range(2):
                    answer = await call(api, "GET", base + "api/kernels")
                    assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds
                    ids = kernel_ids(answer)
                    assert a_kernel in ids and slow_kernel not in ids, ids
                answer = await call(api, "GET", base + "api/kernelspecs")
                assert answer.status == 200, answer.text
                assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds
                assert "python3" in answer.body["kernelspecs"]
                assert not [n for n in answer.body["kernelspecs"] if n.startswith(f"{SLOW}--")]

                # Its kernel's requests wait --backend-timeout, then 504 naming it.
                answer = await call(api, "GET", f"{base}api/kernels/{slow_kernel}")
                assert_error(answer, 504, SLOW)
                assert BACKEND_TIMEOUT - 0.5 < answer.seconds < BACKEND_TIMEOUT + 3, answer.seconds
                answer = await call(api, "POST", f"{base}api/kernels/{slow_kernel}/interrupt")
                assert_error(answer, 504, SLOW)

                status = await status_of(api, base)
                assert status[SLOW]["kernels_error"], status[SLOW]
                assert status[SLOW]["reachable"] is False, status[SLOW]
                assert status[SLOW]["error"], status[SLOW]
                assert status["a"]["kernels_error"] is None, status["a"]
            finally:
                slow_server.proc.send_signal(signal.SIGCONT)

            # Thawed: its kernels reappear in the same relay's lists.

            async def with_slow() -> dict[str, Any]:
                listed = await list_kernels(api, base)
                assert slow_kernel in listed, listed.keys()
                return listed

            listed = await eventually(
                with_slow, timeout=20, interval=0.5, what=f"{slow_kernel} listed again"
            )
            assert {a_kernel, slow_kernel} <= listed.keys(), listed.keys()
            assert listed[slow_kernel]["name"] == f"{SLOW}--python3"
            answer = await call(api, "GET", f"{base}api/kernels/{slow_kernel}")
            assert answer.status == 200 and answer.body["id"] == slow_kernel, answer.text
            assert await where_it_runs(api, base, slow_kernel) == SLOW
            # Its kernels are listed again: no error left to explain their absence.
            status = await status_of(api, base)
            assert status[SLOW]["kernels_error"] is None, status[SLOW]

            for kernel_id in (slow_kernel, a_kernel):
                answer = await call(api, "DELETE", f"{base}api/kernels/{kernel_id}")
                assert answer.status == 204, answer.text
            assert not {a_kernel, slow_kernel} & (await list_kernels(api, base)).keys()
        finally:
            if a_kernel:
                await delete_direct(mixed.a, a_kernel)
            if slow_kernel:
                await delete_direct(slow_server, slow_kernel)


# --- 2. a backend answering garbage JSON ------------------------------------------------------


async def test_backend_with_garbage_json_is_left_out(
    mixed: Mixed, junk_backend: FakeBackend, api: aiohttp.ClientSession
) -> None:
    session_id = kernel_id = ""
    async with relay_over([f"a={mixed.a.backend_arg}", f"{JUNK}={junk_backend.url}"]) as r:
        base = r.base_url
        try:
            kernel_id = await start_kernel(api, base, "python3")
            body = {
                "path": "mixer-failures-junk.ipynb",
                "type": "notebook",
                "name": "",
                "kernel": {"name": "python3"},
            }
            answer = await call(api, "POST", base + "api/sessions", json_body=body)
            assert answer.status == 201, answer.text
            session_id = answer.body["id"]

            answer = await call(api, "GET", base + "api/kernels")
            assert kernel_id in kernel_ids(answer)
            assert answer.seconds < LIST_TIMEOUT + LIST_MARGIN, answer.seconds
            answer = await call(api, "GET", base + "api/kernelspecs")
            assert answer.status == 200, answer.text
            assert answer.body["default"] == "python3"
            assert "python3" in answer.body["kernelspecs"]
            assert not [n for n in answer.body["kernelspecs"] if n.startswith(f"{JUNK}--")]
            answer = await call(api, "GET", base + "api/sessions")
            assert answer.status == 200, answer.text
            assert session_id in [s["id"] for s in answer.body]
            assert "GET /api/kernels" in junk_backend.seen, junk_backend.seen

            status = await status_of(api, base)
            assert status[JUNK]["kernels_error"], status[JUNK]
            assert "json" in status[JUNK]["kernels_error"].lower(), status[JUNK]
            assert status["a"]["kernels_error"] is None, status["a"]

            answer = await call(
                api, "POST", base + "api/kernels", json_body={"name": f"{JUNK}--python3"}
            )
            assert_error(answer, 502, JUNK)
            answer = await call(api, "GET", f"{base}api/kernelspecs/{JUNK}--python3")
            assert_error(answer, 502, JUNK)

            answer = await call(api, "DELETE", f"{base}api/sessions/{session_id}")
            assert answer.status == 204, answer.text
            answer = await call(api, "DELETE", f"{base}api/kernels/{kernel_id}")
            assert answer.status == 204, answer.text
        finally:
            if session_id:
                headers = {"Authorization": f"token {mixed.a.token}"}
                async with aiohttp.ClientSession(headers=headers) as direct:
                    await call(direct, "DELETE", f"{mixed.a.base}api/sessions/{session_id}")
            if kernel_id:
                await delete_direct(mixed.a, kernel_id)


# --- 3. unknown and malformed kernel ids ------------------------------------------------------


async def test_unknown_kernel_id_is_404_json(
    mixed: Mixed, spy_backend: FakeBackend, api: aiohttp.ClientSession
) -> None:
    async with relay_over([*mixed.backend_args, f"{SPY}={spy_backend.url}"]) as r:
        base = r.base_url
        for kernel_id in (ZERO_ID, "not-an-id"):
            url = f"{base}api/kernels/{kernel_id}"
            for method, target in [
                ("GET", url),
                ("DELETE", url),
                ("POST", url + "/restart"),
                ("POST", url + "/interrupt"),
            ]:
                answer = await call(api, method, target)
                assert_error(answer, 404)
                assert answer.seconds < 10, (method, target, answer.seconds)
            start = time.monotonic()
            assert await ws_refused(api, url + "/channels") == 404
            assert time.monotonic() - start < 10
            if kernel_id == ZERO_ID:
                # The spy is asked like every backend (so it would notice the next id).
                assert spy_backend.seen, "the relay asked no backend about an unknown id"
                spy_backend.seen.clear()
        # A malformed id is refused by the relay itself.
        assert not [p for p in spy_backend.seen if "not-an-id" in p], spy_backend.seen
        # And the relay keeps serving.
        assert (await call(api, "GET", base + "api/kernels")).status == 200


# --- 4. a kernel name for a backend that does not exist ---------------------------------------


async def test_unknown_backend_prefix_is_404_naming_the_known_ones(
    mixed: Mixed, api: aiohttp.ClientSession
) -> None:
    names = ("alpha", "bravo", "egw")
    backends = [
        f"alpha={mixed.a.backend_arg}",
        f"bravo={mixed.b.backend_arg}",
        f"egw={mixed.eg.backend_arg}",
    ]
    async with relay_over(backends) as r:
        base = r.base_url
        before = set(await list_kernels(api, base))
        answer = await call(
            api, "POST", base + "api/kernels", json_body={"name": "nosuch--python3"}
        )
        assert_error(answer, 404, "nosuch", *names)
        body = {
            "path": "mixer-failures-nosuch.ipynb",
            "type": "notebook",
            "name": "",
            "kernel": {"name": "nosuch--python3"},
        }
        answer = await call(api, "POST", base + "api/sessions", json_body=body)
        assert_error(answer, 404, "nosuch", *names)
        answer = await call(api, "GET", base + "api/kernelspecs/nosuch--python3")
        assert_error(answer, 404, "nosuch")
        answer = await call(api, "GET", base + "api/kernelspecs/bravo--nosuchspec")
        assert_error(answer, 404)
        # Nothing was started anywhere, and no session was made.
        assert set(await list_kernels(api, base)) == before
        answer = await call(api, "GET", base + "api/sessions")
        assert answer.status == 200, answer.text
        assert not [s for s in answer.body if s["path"] == body["path"]], answer.body


# --- 5. many clients at once --------------------------------------------------------------------

CONCURRENT_KERNELS = 30
LISTERS = 10


LEFT_OUT = re.compile(r"left (\w+) out of /api/kernels")
BACKEND_OF = {"python3": "a", "b--python3": "b", "eg--python3": "eg"}


async def test_concurrent_starts_lists_and_stops_stay_consistent(
    mixed: Mixed, api: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["python3", "b--python3", "eg--python3"]
    owners: dict[str, JupyterServer | KernelGateway] = {
        "python3": mixed.a,
        "b--python3": mixed.b,
        "eg--python3": mixed.eg,
    }
    started: dict[str, str] = {}  # kernel id -> mixed name
    stopping: set[str] = set()
    lists_seen = lists_failed = 0
    # The default --list-timeout: this test is about consistency, not the bound, and 30
    # kernels booting on 2 cores can hold a backend's answer past 1 s.
    async with relay_over(mixed.backend_args, list_timeout="5") as r:
        base = r.base_url
        busy = asyncio.Event()
        busy.set()

        async def lister() -> None:
            nonlocal lists_seen, lists_failed
            while busy.is_set():
                # Started (answered 201) before this list was asked, and not being stopped.
                expected = set(started) - stopping
                mark = len(caplog.records)
                answer = await call(api, "GET", base + "api/kernels")
                # A backend answering 500 while a kernel is half started is left out of
                # that list (and the status page says why): its kernels may be missing
                # from it, and only its kernels.
                left_out = {
                    match.group(1)
                    for r in caplog.records[mark:]
                    if (match := LEFT_OUT.match(r.getMessage()))
                }
                # And a kernel whose stop began while the list was asked may be gone from it.
                expected = {
                    k for k in expected - stopping if BACKEND_OF[started[k]] not in left_out
                }
                if answer.status != 200:
                    # Only when every backend failed this list (jupyter_server and the
                    # gateway answer GET /api/kernels with 500 while a kernel is half
                    # started); the relay then says so rather than list nothing.
                    assert answer.status in (502, 504), answer.text
                    assert_error(answer, answer.status, "a", "b", "eg")
                    lists_failed += 1
                    continue
                ids = kernel_ids(answer)
                assert len(ids) == len(set(ids)), f"a kernel listed twice: {ids}"
                assert not expected - set(ids), f"a started kernel was not listed: {expected}"
                for kernel in answer.body:
                    if kernel["id"] in started:
                        assert kernel["name"] == started[kernel["id"]], kernel
                lists_seen += 1

        async def starter(i: int) -> None:
            name = names[i % len(names)]
            answer = await call(api, "POST", base + "api/kernels", json_body={"name": name})
            assert answer.status == 201, answer.text
            assert answer.body["name"] == name, answer.body
            assert answer.body["id"] not in started
            started[answer.body["id"]] = name

        async def stopper(kernel_id: str) -> None:
            stopping.add(kernel_id)
            answer = await call(api, "DELETE", f"{base}api/kernels/{kernel_id}")
            assert answer.status == 204, (kernel_id, answer.text)

        async def with_listers(*work: Any) -> None:
            busy.set()
            listers = [asyncio.create_task(lister()) for _ in range(LISTERS)]
            try:
                await asyncio.gather(*work)
            finally:
                busy.clear()
                await asyncio.gather(*listers)

        try:
            began = time.monotonic()
            await with_listers(*(starter(i) for i in range(CONCURRENT_KERNELS)))
            started_in = time.monotonic() - began
            assert len(started) == CONCURRENT_KERNELS
            assert lists_seen >= LISTERS, lists_seen

            answer = await call(api, "GET", base + "api/kernels")
            ids = kernel_ids(answer)
            for kernel_id in started:
                assert ids.count(kernel_id) == 1, (kernel_id, ids)
            listed = {k["id"]: k["name"] for k in answer.body}
            assert {k: listed[k] for k in started} == started

            lists_seen = 0
            await with_listers(*(stopper(k) for k in list(started)))
            assert lists_seen >= LISTERS, lists_seen
            remaining = set(await list_kernels(api, base)) & started.keys()
            assert not remaining, remaining
            for server in (mixed.a, mixed.b, mixed.eg):
                assert not (await backend_kernel_ids(server)) & started.keys()
            print(f"started in {started_in:.1f} s; lists failed by every backend: {lists_failed}")
        finally:
            await asyncio.gather(*(delete_direct(owners[n], k) for k, n in started.items()))


# --- 6. ownership learnt by asking: a fresh relay, and a second one beside it -----------------


async def test_fresh_and_second_relay_serve_an_existing_kernel(
    mixed: Mixed, own_work: Path, api: aiohttp.ClientSession
) -> None:
    kernel_id = ""
    second: RelayProcess | None = None
    try:
        async with relay_over(mixed.backend_args) as first:
            kernel_id = await start_kernel(api, first.base_url, "b--python3")

        # A fresh relay has never seen the kernel; it asks, without any list first.
        async with relay_over(mixed.backend_args) as fresh:
            answer = await call(api, "GET", f"{fresh.base_url}api/kernels/{kernel_id}")
            assert answer.status == 200, answer.text
            assert answer.body["id"] == kernel_id and answer.body["name"] == "b--python3"
            assert await where_it_runs(api, fresh.base_url, kernel_id) == "b"

            # A second relay, a separate process beside it: the websocket first, then REST.
            args = ["--port", "0", "--token", RELAY_TOKEN, "--list-timeout", str(LIST_TIMEOUT)]
            for backend in mixed.backend_args:
                args += ["--backend", backend]
            second = start_relay_process(args, own_work)
            assert await where_it_runs(api, second.base, kernel_id) == "b"
            answer = await call(api, "GET", f"{second.base}api/kernels/{kernel_id}")
            assert answer.status == 200, answer.text
            assert answer.body["name"] == "b--python3"
            answer = await call(api, "POST", f"{second.base}api/kernels/{kernel_id}/interrupt")
            assert answer.status == 204, answer.text

            # Both serve it at once.
            answer = await call(api, "GET", f"{fresh.base_url}api/kernels/{kernel_id}")
            assert answer.status == 200 and answer.body["id"] == kernel_id, answer.text
            assert await where_it_runs(api, fresh.base_url, kernel_id) == "b"

            answer = await call(api, "DELETE", f"{second.base}api/kernels/{kernel_id}")
            assert answer.status == 204, answer.text
            assert kernel_id not in await backend_kernel_ids(mixed.b)
            answer = await call(api, "GET", f"{fresh.base_url}api/kernels/{kernel_id}")
            assert_error(answer, 404)
    finally:
        if second is not None:
            second.stop()
        if kernel_id:
            await delete_direct(mixed.b, kernel_id)


# --- 7. a Kernel Gateway that does not list its kernels --------------------------------------


async def test_gateway_without_listing_still_lists_the_relays_kernels(
    mixed: Mixed, nolist_gateway: KernelGateway, api: aiohttp.ClientSession
) -> None:
    kernel_id = ""
    backends = [f"a={mixed.a.backend_arg}", f"{NOLIST}={nolist_gateway.backend_arg}"]
    async with relay_over(backends) as r:
        base = r.base_url
        try:
            answer = await call(api, "GET", base + "api/kernelspecs")
            assert answer.status == 200, answer.text
            assert f"{NOLIST}--python3" in answer.body["kernelspecs"], answer.body

            kernel_id = await start_kernel(api, base, f"{NOLIST}--python3")
            listed = await list_kernels(api, base)
            assert kernel_id in listed, listed.keys()
            assert listed[kernel_id]["name"] == f"{NOLIST}--python3"
            answer = await call(api, "GET", f"{base}api/kernels/{kernel_id}")
            assert answer.status == 200 and answer.body["id"] == kernel_id, answer.text
            assert await where_it_runs(api, base, kernel_id) == NOLIST

            status = await status_of(api, base)
            assert "KG_LIST_KERNELS" in (status[NOLIST]["kernels_error"] or ""), status[NOLIST]
            assert status[NOLIST]["reachable"] is True, status[NOLIST]
            # Lists of other kinds, which the gateway answers, say nothing about its kernels.
            for path in ("api/kernelspecs", "api/sessions"):
                assert (await call(api, "GET", base + path)).status == 200
                status = await status_of(api, base)
                error = status[NOLIST]["kernels_error"] or ""
                assert "KG_LIST_KERNELS" in error, (path, status[NOLIST])

            answer = await call(api, "DELETE", f"{base}api/kernels/{kernel_id}")
            assert answer.status == 204, answer.text
            assert kernel_id not in await list_kernels(api, base)
            answer = await call(api, "GET", f"{base}api/kernels/{kernel_id}")
            assert_error(answer, 404)
        finally:
            if kernel_id:
                await delete_direct(nolist_gateway, kernel_id)


# --- 8. large answers and bodies, deep JSON, names that look prefixed -------------------------


async def test_large_answers_and_bodies_are_read_whole(
    mixed: Mixed, odd_server: JupyterServer, api: aiohttp.ClientSession
) -> None:
    async with relay_over([f"{ODD}={odd_server.backend_arg}", f"eg={mixed.eg.backend_arg}"]) as r:
        answer = await call(api, "GET", r.base_url + "api/kernelspecs")
        assert answer.status == 200, answer.text[:500]
        assert len(answer.body["kernelspecs"]["big"]["spec"]["metadata"]["blob"]) == BIG_FIELD
        answer = await call(api, "GET", r.base_url + "api/kernelspecs/big")
        assert answer.status == 200, answer.text[:500]
        assert len(answer.body["spec"]["metadata"]["blob"]) == BIG_FIELD
        # A client body of many chunks is read whole too, and one past the limit is
        # refused in Jupyter's JSON shape.
        kernel_id = await start_kernel(api, r.base_url, "python3")
        try:
            url = f"{r.base_url}api/kernels/{kernel_id}/interrupt"
            answer = await call(api, "POST", url, json_body={"pad": "y" * 500_000})
            assert answer.status == 204, answer.text
            answer = await call(api, "POST", url, json_body={"pad": "y" * (1024 * 1024)})
            assert_error(answer, 413, "larger than")
        finally:
            await delete_direct(odd_server, kernel_id)


async def test_primary_spec_named_like_another_backends_stays_on_the_primary(
    mixed: Mixed, odd_server: JupyterServer, api: aiohttp.ClientSession
) -> None:
    # The primary's own `eg--python3` wins the merge over eg's python3, so it is the
    # one listed, described and started under that name, before and after a listing.
    async with relay_over([f"{ODD}={odd_server.backend_arg}", f"eg={mixed.eg.backend_arg}"]) as r:
        answer = await call(api, "GET", r.base_url + "api/kernelspecs/eg--python3")
        assert answer.status == 200, answer.text
        assert answer.body["spec"]["display_name"] == "Odd eg--python3"
        kernel_id = await start_kernel(api, r.base_url, "eg--python3")
        try:
            assert await where_it_runs(api, r.base_url, kernel_id) == ODD
            assert kernel_id in await backend_kernel_ids(odd_server)
            answer = await call(api, "GET", r.base_url + "api/kernelspecs")
            listed = answer.body["kernelspecs"]["eg--python3"]
            assert listed["spec"]["display_name"] == "Odd eg--python3"
        finally:
            await delete_direct(odd_server, kernel_id)


async def test_deeply_nested_json_leaves_that_backend_out(
    mixed: Mixed, junk_backend: FakeBackend, api: aiohttp.ClientSession
) -> None:
    junk_backend.body = b"[" * 200_000 + b"]" * 200_000
    async with relay_over([f"a={mixed.a.backend_arg}", f"{JUNK}={junk_backend.url}"]) as r:
        for path in ("api/kernels", "api/sessions", "api/kernelspecs"):
            answer = await call(api, "GET", r.base_url + path)
            assert answer.status == 200, answer.text
        status = await status_of(api, r.base_url)
        assert "nested too deeply" in (status[JUNK]["kernels_error"] or ""), status[JUNK]
        assert status["a"]["kernels_error"] is None, status["a"]
