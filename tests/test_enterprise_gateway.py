"""The relay in front of a real Enterprise Gateway whose kernels run on two SSH "hosts".

EG (tests/eg.py) launches each kernel with its DistributedProcessProxy over SSH on
127.0.0.2 or 127.0.0.3, in turn. Through the relay (`--backend eg=gateway+http://...`,
beside a Jupyter server that holds the files): kernels land on both hosts (each sees
SSH_CONNECTION to its host), run code over the v1 and the legacy websocket protocols,
interrupt, restart and shut down; a session gets one too. Kernel starts carry the `env`
Jupyter's GatewayClient sends (KERNEL_USERNAME, the relay's KERNEL_* variables), and a
start EG refuses says what to set. A slow start holds up nothing else, and one slower
than --kernel-start-timeout is a 504 that names the flag.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RELAY_TOKEN, WatchedRelay, watched_relay
from .eg import (
    HOSTS,
    REFUSED_SPEC,
    SLOW_SPEC,
    SPEC,
    EnterpriseGateway,
    running_enterprise_gateway,
)
from .kernel_client import V1, execute, run_code
from .servers import JupyterServer
from .waiting import eventually

RELAY_ENV = {"KERNEL_USERNAME": "alice", "KERNEL_RELAY_MARK": "from-the-relay"}
# What a kernel tells about where it runs and what it was given.
PROBE = (
    "import os; e = os.environ; "
    "print(e['SSH_CONNECTION'].split()[2], e.get('KERNEL_USERNAME'), "
    "e.get('KERNEL_RELAY_MARK'), e.get('KERNEL_FROM_CLIENT'), os.getpid())"
)


@pytest.fixture(scope="module")
def eg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnterpriseGateway]:
    with running_enterprise_gateway(tmp_path_factory.mktemp("eg")) as gateway:
        yield gateway


def backends(jupyter: JupyterServer, eg: EnterpriseGateway) -> list[str]:
    return [f"lab={jupyter.backend_arg}", f"eg={eg.backend_arg}"]


def relay_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """What the next in-process relay finds in its environment (read when it starts)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def relay(
    jupyter: JupyterServer, eg: EnterpriseGateway, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[WatchedRelay]:
    """The relay in front of the Jupyter server and EG, its user named alice."""
    relay_environment(monkeypatch, RELAY_ENV)
    async with watched_relay(backends(jupyter, eg)) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"token {RELAY_TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=120),
    ) as session:
        yield session


async def answer(
    client: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with client.request(method, url, json=body) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def eg_kernels(eg: EnterpriseGateway) -> set[str]:
    """The ids of the kernels EG runs, asked of EG itself."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"token {eg.token}"}) as direct,
        direct.get(eg.base + "api/kernels") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return {k["id"] for k in await resp.json()}


async def start(client: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> str:
    status, kernel = await answer(client, "POST", base + "api/kernels", body)
    assert status == 201, kernel
    return str(kernel["id"])


async def probe(client: aiohttp.ClientSession, base: str, kernel_id: str) -> list[str]:
    return (await run_code(client, base, kernel_id, PROBE)).split()


async def run_legacy(client: aiohttp.ClientSession, base: str, kernel_id: str, code: str) -> str:
    """`code` over the legacy protocol (no subprotocol: JSON text frames)."""
    async with asyncio.timeout(60):
        async with client.ws_connect(f"{base}api/kernels/{kernel_id}/channels") as ws:
            assert ws.protocol is None
            out, reply = await execute(ws, code)
    assert reply["content"]["status"] == "ok", (out, reply)
    return out.strip()


async def shut_down(client: aiohttp.ClientSession, base: str, kernel_id: str) -> None:
    status, body = await answer(client, "DELETE", f"{base}api/kernels/{kernel_id}")
    assert status == 204, body


async def test_kernels_land_on_both_hosts_and_run_on_both_protocols(
    relay: WatchedRelay, eg: EnterpriseGateway, client: aiohttp.ClientSession
) -> None:
    base = relay.base
    _, specs = await answer(client, "GET", base + "api/kernelspecs")
    assert f"eg--{SPEC}" in specs["kernelspecs"], sorted(specs["kernelspecs"])
    # EG takes the hosts in turn: two starts in a row land on both.
    kernels = [await start(client, base, {"name": f"eg--{SPEC}"}) for _ in HOSTS]
    assert set(kernels) <= await eg_kernels(eg)
    hosts = set()
    for kernel_id in kernels:
        host, user, mark, _, _ = await probe(client, base, kernel_id)
        hosts.add(host)
        assert (user, mark) == ("alice", "from-the-relay")  # the relay's env reached it
        legacy = await run_legacy(
            client, base, kernel_id, "import os; print(os.environ['SSH_CONNECTION'])"
        )
        assert legacy.split()[2] == host
    assert hosts == set(HOSTS)
    listed = {k["id"] for k in (await answer(client, "GET", base + "api/kernels"))[1]}
    assert set(kernels) <= listed
    for kernel_id in kernels:
        await shut_down(client, base, kernel_id)
    assert not set(kernels) & await eg_kernels(eg)


async def test_interrupt_restart_and_delete(
    relay: WatchedRelay, eg: EnterpriseGateway, client: aiohttp.ClientSession
) -> None:
    base = relay.base
    kernel_id = await start(client, base, {"name": f"eg--{SPEC}"})
    before = await probe(client, base, kernel_id)
    async with asyncio.timeout(60):
        url = f"{base}api/kernels/{kernel_id}/channels"
        async with client.ws_connect(url, protocols=(V1,)) as ws:
            assert ws.protocol == V1
            running = asyncio.ensure_future(execute(ws, "import time; time.sleep(120)"))

            async def interrupted() -> bool:
                status, body = await answer(
                    client, "POST", f"{base}api/kernels/{kernel_id}/interrupt"
                )
                assert status == 204, body
                await asyncio.wait({running}, timeout=1)  # again if it was not yet running
                return running.done()

            await eventually(interrupted, timeout=30, interval=0.2, what="the sleep interrupted")
            out, reply = running.result()
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt", (out, reply)
    status, restarted = await answer(client, "POST", f"{base}api/kernels/{kernel_id}/restart", {})
    assert status == 200, restarted
    assert restarted["id"] == kernel_id and restarted["name"] == f"eg--{SPEC}"
    after = await probe(client, base, kernel_id)
    assert after[0] in HOSTS and after[1] == "alice"
    assert after[-1] != before[-1]  # a new process
    await shut_down(client, base, kernel_id)
    assert kernel_id not in await eg_kernels(eg)
    status, gone = await answer(client, "GET", f"{base}api/kernels/{kernel_id}")
    assert status == 404, gone


async def test_a_session_gets_a_kernel_on_a_host(
    relay: WatchedRelay, eg: EnterpriseGateway, client: aiohttp.ClientSession
) -> None:
    base = relay.base
    note: dict[str, Any] = {"path": "eg.ipynb", "name": "eg.ipynb", "type": "notebook"}
    note["kernel"] = {"name": f"eg--{SPEC}"}
    status, session = await answer(client, "POST", base + "api/sessions", note)
    assert status == 201, session
    kernel_id = session["kernel"]["id"]
    assert session["kernel"]["name"] == f"eg--{SPEC}"
    assert kernel_id in await eg_kernels(eg)
    host, user, mark, _, _ = await probe(client, base, kernel_id)
    assert host in HOSTS and (user, mark) == ("alice", "from-the-relay")
    status, listed = await answer(client, "GET", base + "api/sessions")
    assert [s["kernel"]["id"] for s in listed if s["id"] == session["id"]] == [kernel_id]
    status, body = await answer(client, "DELETE", f"{base}api/sessions/{session['id']}")
    assert status == 204, body
    assert kernel_id not in await eg_kernels(eg)


async def test_a_clients_env_is_kept_and_its_username_wins(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    body = {"name": f"eg--{SPEC}", "env": {"KERNEL_USERNAME": "bob", "KERNEL_FROM_CLIENT": "yes"}}
    kernel_id = await start(client, relay.base, body)
    _, user, mark, from_client, _ = await probe(client, relay.base, kernel_id)
    assert (user, mark, from_client) == ("bob", "from-the-relay", "yes")
    await shut_down(client, relay.base, kernel_id)


async def test_a_start_eg_refuses_names_kernel_username(
    jupyter: JupyterServer,
    eg: EnterpriseGateway,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`python_refused` refuses the relay's own user, as EG refuses root by default: the
    relay sends it (getpass.getuser()) when its environment names nobody else; the
    answer is EG's, with what to set. Named in the relay's environment, the start works."""
    me = getpass.getuser()
    monkeypatch.delenv("KERNEL_USERNAME", raising=False)
    async with watched_relay(backends(jupyter, eg)) as plain:
        kernel = {"name": f"eg--{REFUSED_SPEC}"}
        note = {"path": "refused.ipynb", "type": "notebook", "kernel": kernel}
        for path, body in (("api/kernels", kernel), ("api/sessions", note)):
            status, error = await answer(client, "POST", plain.base + path, body)
            assert status == 403, error
            assert error["reason"] == "Forbidden"
            message = error["message"]
            assert message.startswith(f"User '{me}' is not authorized to start kernel"), message
            assert f"the relay sent KERNEL_USERNAME={me!r}" in message
            assert "set KERNEL_USERNAME in the relay's environment" in message
    relay_environment(monkeypatch, RELAY_ENV)
    async with watched_relay(backends(jupyter, eg)) as named:
        kernel_id = await start(client, named.base, {"name": f"eg--{REFUSED_SPEC}"})
        assert (await probe(client, named.base, kernel_id))[1] == "alice"
        await shut_down(client, named.base, kernel_id)


async def test_a_slow_start_holds_up_nothing_else(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    base = relay.base
    starting = asyncio.ensure_future(
        answer(client, "POST", base + "api/kernels", {"name": f"eg--{SLOW_SPEC}"})
    )
    try:
        for path in ("api/kernels", "api/contents", "api/sessions", "api/kernelspecs"):
            status, body = await answer(client, "GET", base + path)
            assert status == 200, (path, body)
            assert not starting.done(), f"GET /{path} answered only after the slow start"
        status, kernel = await starting
        assert status == 201, kernel
    finally:
        if not starting.done():
            starting.cancel()
    await shut_down(client, base, kernel["id"])


async def test_a_launch_eg_gives_up_on_is_answered_with_egs_words(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    """Within --kernel-start-timeout the client sees EG's own answer: here its launch
    timeout (KERNEL_LAUNCH_TIMEOUT, from the client's env) shorter than the slow start."""
    body = {"name": f"eg--{SLOW_SPEC}", "env": {"KERNEL_LAUNCH_TIMEOUT": "1"}}
    status, error = await answer(client, "POST", relay.base + "api/kernels", body)
    assert status == 500, error
    assert "Waited too long (1.0s) to get connection file" in error["message"], error


async def test_a_start_past_kernel_start_timeout_is_a_504_naming_the_flag(
    jupyter: JupyterServer,
    eg: EnterpriseGateway,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = await eg_kernels(eg)
    relay_environment(monkeypatch, RELAY_ENV)
    async with watched_relay(backends(jupyter, eg), kernel_start_timeout="1") as relay:
        kernel = {"name": f"eg--{SLOW_SPEC}"}
        note = {"path": "slow.ipynb", "type": "notebook", "kernel": kernel}
        answers = await asyncio.gather(
            answer(client, "POST", relay.base + "api/kernels", kernel),
            answer(client, "POST", relay.base + "api/sessions", note),
        )
        for status, error in answers:
            assert status == 504, error
            assert "did not start the kernel within 1 s" in error["message"]
            assert "--kernel-start-timeout" in error["message"]
        # Other requests wait --backend-timeout as before.
        status, listed = await answer(client, "GET", relay.base + "api/kernels")
        assert status == 200, listed

    # EG went on with both starts: shut them down (finding them is issue 20's next part).
    async def late() -> set[str] | None:
        new = await eg_kernels(eg) - before
        return new if len(new) == 2 else None

    headers = {"Authorization": f"token {eg.token}"}
    for kernel_id in await eventually(late, timeout=60, what="EG ran both slow starts"):
        async with (
            aiohttp.ClientSession(headers=headers) as direct,
            direct.delete(f"{eg.base}api/kernels/{kernel_id}") as resp,
        ):
            assert resp.status == 204, await resp.text()


def test_the_fixture_hosts_are_two_sshd(eg: EnterpriseGateway, tmp_path: Path) -> None:
    """Each "host" is its own sshd with its own host key, on the address EG is told."""
    assert [h.address for h in eg.hosts] == list(HOSTS)
    assert eg.hosts[0].host_public_key != eg.hosts[1].host_public_key
    for host in eg.hosts:
        done = host.ssh('echo "$SSH_CONNECTION"')
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[2] == host.address
