"""The seed's own three-process setup, with `jupyter-relay` in the Go mixer's place.

A real front server, `jupyter lab --GatewayClient.url=<relay>`, uses the relay (the real
`jupyter-relay` command in front of Jupyter servers `a`, `b` and Kernel Gateway `eg`) as its
gateway. Through the front server's own REST API and kernel websocket, kernels start and run code
on each backend, and shut down; the front server authenticates to the relay either with
`--GatewayClient.auth_token` or, as the seed's users do, with a `token` header in
`--GatewayClient.headers`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RELAY_TOKEN, Mixed
from .kernel_client import V1, execute
from .servers import (
    JupyterServer,
    KernelGateway,
    RelayProcess,
    start_jupyter,
    start_relay_process,
)
from .waiting import eventually_sync

# The front server waits this long for the relay (kernel starts included).
GATEWAY_TIMEOUT = 120
CODE = 'import os; print(os.environ.get("RELAY_TEST_BACKEND", "-"), os.getppid())'
# Mixed spec name -> where its kernels must run (RELAY_TEST_BACKEND).
WHERE = {"python3": "a", "b--python3": "b", "eg--python3": "eg"}
# The seed's documented header style, token included; XSRF values are the seed's dummies.
SEED_HEADERS = {"token": RELAY_TOKEN, "Cookie": "_xsrf=XSRF", "X-XSRFToken": "XSRF"}


# A real `jupyter lab` whose kernels live behind a gateway (GatewayClient.url).
FrontServer = JupyterServer


def start_front(workdir: Path, gateway_args: list[str]) -> FrontServer:
    """Start `jupyter lab --no-browser <gateway_args>` on a free loopback port.

    It gets its own token, runtime, config, workspace and settings directories.
    """
    home = workdir / f"front-{secrets.token_hex(4)}"
    config, root = home / "config", home / "root"
    for directory in (config, root):
        directory.mkdir(parents=True)
    front = start_jupyter(
        root,
        home,
        module="jupyterlab",
        wait_ready=False,
        env_extra={"JUPYTER_CONFIG_DIR": str(config)},
        extra_args=(
            f"--GatewayClient.request_timeout={GATEWAY_TIMEOUT}",
            f"--GatewayClient.connect_timeout={GATEWAY_TIMEOUT}",
            *gateway_args,
        ),
    )
    try:
        wait_status(front)
    except RuntimeError as exc:
        front.stop()
        raise RuntimeError(f"{exc}\n{front.logs()}") from None
    return front


def wait_status(front: FrontServer, timeout: float = 90) -> None:
    """Wait until the front server answers /api/status (which asks its gateway for kernels).

    A 401/403 there is the gateway refusing the front server's credentials: no retry helps.
    """

    def answers() -> bool:
        if front.proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited {front.proc.returncode}")
        request = urllib.request.Request(f"{front.base}api/status", headers=front.headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                body = exc.read().decode(errors="replace")
                message = f"GET /api/status on the front server -> {exc.code} {body}"
                raise RuntimeError(message) from None
            raise

    try:
        eventually_sync(
            answers,
            timeout=timeout,
            interval=0.1,
            what="the front server's /api/status answers 200",
            ignoring=(OSError,),
        )
    except AssertionError as exc:
        raise RuntimeError(str(exc)) from exc


@pytest.fixture(scope="module")
def mixer(mixed: Mixed, workdir: Path) -> Iterator[RelayProcess]:
    """The `jupyter-relay` command in front of a, b (jupyter) and eg (gateway)."""
    args = ["--port", "0", "--token", RELAY_TOKEN]
    for backend in mixed.backend_args:
        args += ["--backend", backend]
    proc = start_relay_process(args, workdir)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def front(mixer: RelayProcess, workdir: Path) -> Iterator[FrontServer]:
    """`jupyter lab --GatewayClient.url=<relay> --GatewayClient.auth_token=<relay token>`."""
    server = start_front(
        workdir,
        [
            f"--GatewayClient.url={mixer.base.rstrip('/')}",
            f"--GatewayClient.auth_token={RELAY_TOKEN}",
        ],
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seed_front(mixer: RelayProcess, workdir: Path) -> Iterator[FrontServer]:
    """The seed's style: the relay token in a `token` header, no GatewayClient.auth_token."""
    server = start_front(
        workdir,
        [
            f"--GatewayClient.url={mixer.base.rstrip('/')}",
            f"--GatewayClient.headers={json.dumps(SEED_HEADERS)}",
        ],
    )
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without default credentials: each request names whom it authenticates to."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GATEWAY_TIMEOUT)) as s:
        yield s


def relay_auth() -> dict[str, str]:
    return {"Authorization": f"token {RELAY_TOKEN}"}


async def get_json(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], context: str = ""
) -> Any:
    async with http.get(url, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 200, f"GET {url} -> {resp.status} {text}\n{context}"
        return json.loads(text)


async def start_kernel(http: aiohttp.ClientSession, front: FrontServer, name: str) -> str:
    url = f"{front.base}api/kernels"
    async with http.post(url, json={"name": name}, headers=front.headers) as resp:
        text = await resp.text()
        assert resp.status == 201, f"POST {url} {name} -> {resp.status} {text}\n{front.logs()}"
        model = json.loads(text)
    assert model["name"] == name, model
    kernel_id: str = model["id"]
    return kernel_id


async def run_on_front(
    http: aiohttp.ClientSession, front: FrontServer, kernel_id: str
) -> tuple[str, int]:
    """Run CODE over the front server's kernel websocket: (RELAY_TEST_BACKEND, parent pid)."""
    url = f"{front.base}api/kernels/{kernel_id}/channels?session_id={secrets.token_hex(8)}"
    # Offer v1 as JupyterLab does; a gateway-backed front server may answer legacy.
    async with (
        asyncio.timeout(90),
        http.ws_connect(url, headers=front.headers, protocols=(V1,), max_msg_size=0) as ws,
    ):
        out, reply = await execute(ws, CODE)
    assert reply["content"]["status"] == "ok", (reply, out)
    tag, ppid = out.split()
    return tag, int(ppid)


def backend(mixed: Mixed, where: str) -> JupyterServer | KernelGateway:
    servers: dict[str, JupyterServer | KernelGateway] = {"a": mixed.a, "b": mixed.b, "eg": mixed.eg}
    return servers[where]


def where_it_runs(mixed: Mixed, where: str) -> tuple[str, int]:
    """What CODE prints on a kernel that backend `where` started, and its parent's pid.

    The parent of the kernel process is the backend's server process. A Kernel Gateway
    given an `env` (GatewayClient always sends one) passes on only PATH, KERNEL_* and
    KG_ENV_PROCESS_WHITELIST; the `mixed` fixture lists RELAY_TEST_BACKEND there.
    """
    return where, backend(mixed, where).proc.pid


async def shutdown_on_front(
    http: aiohttp.ClientSession, front: FrontServer, kernel_id: str
) -> None:
    url = f"{front.base}api/kernels/{kernel_id}"
    async with http.delete(url, headers=front.headers) as resp:
        text = await resp.text()
        assert resp.status == 204, f"DELETE {url} -> {resp.status} {text}\n{front.logs()}"


async def relay_kernels(http: aiohttp.ClientSession, mixer: RelayProcess) -> list[dict[str, Any]]:
    kernels: list[dict[str, Any]] = await get_json(
        http, f"{mixer.base}api/kernels", relay_auth(), mixer.logs()[-3000:]
    )
    return kernels


async def backend_kernel_ids(http: aiohttp.ClientSession, mixed: Mixed, where: str) -> set[str]:
    """The kernel ids the backend itself lists (the relay keeps ids unchanged)."""
    server = backend(mixed, where)
    kernels = await get_json(
        http, f"{server.base}api/kernels", {"Authorization": f"token {server.token}"}
    )
    return {k["id"] for k in kernels}


async def cleanup(http: aiohttp.ClientSession, mixer: RelayProcess, kernel_ids: list[str]) -> None:
    """Leave no kernel on the session's backends, whatever the test's outcome."""
    for kernel_id in kernel_ids:
        async with http.delete(f"{mixer.base}api/kernels/{kernel_id}", headers=relay_auth()):
            pass


async def backend_specs(http: aiohttp.ClientSession, mixed: Mixed) -> dict[str, dict[str, Any]]:
    """What the mixed list must be, from the backends' own lists (contract's naming rules)."""
    expected: dict[str, dict[str, Any]] = {}
    for prefix, server in (("", mixed.a), ("b--", mixed.b), ("eg--", mixed.eg)):
        own = await get_json(
            http, f"{server.base}api/kernelspecs", {"Authorization": f"token {server.token}"}
        )
        for name, spec in own["kernelspecs"].items():
            display = spec["spec"]["display_name"]
            if prefix:
                display += f" ({prefix[:-2]})"
            expected[prefix + name] = {
                "display_name": display,
                "language": spec["spec"]["language"],
            }
    return expected


async def check_front_specs(http: aiohttp.ClientSession, front: FrontServer, mixed: Mixed) -> None:
    expected = await backend_specs(http, mixed)
    assert set(WHERE) <= set(expected), expected
    listing = await get_json(http, f"{front.base}api/kernelspecs", front.headers, front.logs())
    specs = listing["kernelspecs"]
    assert set(specs) == set(expected), (specs, expected)
    assert listing["default"] == "python3", listing
    for name, want in expected.items():
        assert specs[name]["name"] == name, specs[name]
        got = {k: specs[name]["spec"][k] for k in want}
        assert got == want, (name, specs[name])
    assert specs["b--python3"]["spec"]["display_name"] == "Python 3 (ipykernel) (b)"
    assert specs["eg--python3"]["spec"]["display_name"] == "Python 3 (ipykernel) (eg)"
    assert specs["python3"]["spec"]["display_name"] == "Python 3 (ipykernel)"


async def test_front_server_lists_the_mixed_kernelspecs(
    front: FrontServer, mixed: Mixed, http: aiohttp.ClientSession
) -> None:
    """The front server's kernelspecs are the relay's merged list: a's unprefixed, b--, eg--."""
    await check_front_specs(http, front, mixed)
    # One spec by name, through the front server (the Go mixer answered this with 400).
    for name, where in WHERE.items():
        one = await get_json(
            http, f"{front.base}api/kernelspecs/{name}", front.headers, front.logs()
        )
        assert one["name"] == name, one
        if where != "a":
            assert one["spec"]["display_name"].endswith(f" ({where})"), one
    # A logo served through front server -> relay -> the owning backend.
    listing = await get_json(http, f"{front.base}api/kernelspecs", front.headers)
    for name in ("b--python3", "eg--python3"):
        logo = listing["kernelspecs"][name]["resources"]["logo-64x64"]
        assert logo.endswith(f"/kernelspecs/{name}/logo-64x64.png"), logo
        async with http.get(
            f"{front.base}kernelspecs/{name}/logo-64x64.png", headers=front.headers
        ) as resp:
            body = await resp.read()
            assert resp.status == 200, (name, resp.status, body[:300], front.logs())
            assert body.startswith(b"\x89PNG"), (name, body[:64])


async def test_front_server_runs_code_on_each_backend(
    front: FrontServer, mixer: RelayProcess, mixed: Mixed, http: aiohttp.ClientSession
) -> None:
    """Kernels started through the front server run on a, b and eg; the relay lists each once."""
    started: dict[str, str] = {}
    try:
        for name in WHERE:
            started[name] = await start_kernel(http, front, name)
        for name, kernel_id in started.items():
            ran = await run_on_front(http, front, kernel_id)
            assert ran == where_it_runs(mixed, WHERE[name]), (name, ran, front.logs())
        listed = await relay_kernels(http, mixer)
        for name, kernel_id in started.items():
            mine = [k for k in listed if k["id"] == kernel_id]
            assert len(mine) == 1, (name, kernel_id, listed)
            assert mine[0]["name"] == name, mine
            # Ids unchanged: the owning backend itself runs a kernel with that id.
            assert kernel_id in await backend_kernel_ids(http, mixed, WHERE[name]), name
        # The front server's own list shows them under the mixed names too.
        front_list = await get_json(http, f"{front.base}api/kernels", front.headers)
        assert {k["id"]: k["name"] for k in front_list if k["id"] in started.values()} == {
            kernel_id: name for name, kernel_id in started.items()
        }, front_list
    finally:
        await cleanup(http, mixer, list(started.values()))


@pytest.mark.parametrize("name", list(WHERE))
async def test_shutdown_through_front_server_removes_kernel_from_relay(
    front: FrontServer,
    mixer: RelayProcess,
    mixed: Mixed,
    http: aiohttp.ClientSession,
    name: str,
) -> None:
    """DELETE on the front server shuts the kernel down on its backend and the relay's list."""
    kernel_id = await start_kernel(http, front, name)
    try:
        assert kernel_id in {k["id"] for k in await relay_kernels(http, mixer)}
        await shutdown_on_front(http, front, kernel_id)
        assert kernel_id not in {k["id"] for k in await relay_kernels(http, mixer)}
        assert kernel_id not in await backend_kernel_ids(http, mixed, WHERE[name])
        async with http.get(f"{mixer.base}api/kernels/{kernel_id}", headers=relay_auth()) as resp:
            assert resp.status == 404, (resp.status, await resp.text())
    finally:
        await cleanup(http, mixer, [kernel_id])


async def test_seed_token_header_is_the_relay_credential(
    mixer: RelayProcess, http: aiohttp.ClientSession
) -> None:
    """What the seed-style front server sends: `token` header plus an empty Authorization."""
    url = f"{mixer.base}api/kernelspecs"
    sent = {**SEED_HEADERS, "Authorization": "token "}
    async with http.get(url, headers=sent) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
    wrong = {**sent, "token": "not-" + RELAY_TOKEN}
    async with http.get(url, headers=wrong) as resp:
        assert resp.status in (401, 403), (resp.status, await resp.text())


async def test_seed_header_style_front_server(
    seed_front: FrontServer, mixer: RelayProcess, mixed: Mixed, http: aiohttp.ClientSession
) -> None:
    """`--GatewayClient.headers='{"token": ..., "Cookie": ..., "X-XSRFToken": ...}'` works."""
    await check_front_specs(http, seed_front, mixed)
    kernel_ids: list[str] = []
    try:
        for name in ("b--python3", "eg--python3"):
            kernel_id = await start_kernel(http, seed_front, name)
            kernel_ids.append(kernel_id)
            ran = await run_on_front(http, seed_front, kernel_id)
            assert ran == where_it_runs(mixed, WHERE[name]), (name, ran, seed_front.logs())
            listed = [k for k in await relay_kernels(http, mixer) if k["id"] == kernel_id]
            assert [k["name"] for k in listed] == [name], listed
            await shutdown_on_front(http, seed_front, kernel_id)
            assert kernel_id not in {k["id"] for k in await relay_kernels(http, mixer)}
    finally:
        await cleanup(http, mixer, kernel_ids)
