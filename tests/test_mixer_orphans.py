"""No orphans: a relay SIGKILLed while creating a gateway session leaves no kernel behind.

A real Kernel Gateway, frozen with SIGSTOP so that the relay's kernel start is in
flight (recorded as pending, sent, not answered) when the relay is killed; thawed,
the gateway starts the kernel under the id the relay chose. The restarted relay
re-binds it to its session; and a kernel whose notebook a peer has given another
session meanwhile (the client retried) is shut down. Both are said in the log and
on the status page, and at the end every kernel on the gateway belongs to a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jupyter_relay.mixer import held

from .conftest import RELAY_TOKEN
from .servers import (
    KernelGateway,
    RelayProcess,
    start_kernel_gateway,
    start_relay_process,
    unread_requests,
)
from .waiting import eventually


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[KernelGateway]:
    """A gateway of this test's own: it is frozen and thawed."""
    gw = start_kernel_gateway(tmp_path)
    yield gw
    gw.proc.send_signal(signal.SIGCONT)
    gw.stop()


@pytest.fixture
async def direct(gateway: KernelGateway) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"token {gateway.token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


def start(state: Path, gateway: KernelGateway, name: str) -> RelayProcess:
    args = ["--port", "0", "--token", RELAY_TOKEN, "--state-dir", str(state)]
    backend = ["--backend", f"{name}={gateway.backend_arg}"]
    return start_relay_process([*args, *backend], state.parent)


async def gateway_kernels(direct: aiohttp.ClientSession, gateway: KernelGateway) -> set[str]:
    async with direct.get(gateway.base + "api/kernels") as resp:
        assert resp.status == 200
        return {k["id"] for k in await resp.json()}


async def sessions(client: aiohttp.ClientSession, relay: RelayProcess) -> list[dict[str, Any]]:
    async with client.get(relay.base + "api/sessions") as resp:
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = await resp.json()
        return found


async def killed_mid_creation(
    client: aiohttp.ClientSession,
    relay: RelayProcess,
    gateway: KernelGateway,
    direct: aiohttp.ClientSession,
    state: Path,
    path: str,
    retry: tuple[RelayProcess, str] | None = None,
) -> tuple[held.Pending, asyncio.Future[aiohttp.ClientResponse] | None]:
    """Create a session for `path` through `relay`, SIGKILL the relay while the gateway
    has the kernel start unanswered, thaw it; the pending record, once its kernel runs.

    With `retry` (a relay, a kernelspec), the client then asks that relay for a session
    for the same path, before the gateway is thawed (so no reconciling comes between)."""
    async with client.get(relay.base + "api/kernelspecs") as resp:  # known before the freeze
        assert resp.status == 200
    before = {p.kernel_id for p in held.Store(state).all_pending()}
    gateway.proc.send_signal(signal.SIGSTOP)
    body = {"path": path, "type": "notebook", "kernel": {"name": "eg--python3"}}
    creating = asyncio.ensure_future(client.post(relay.base + "api/sessions", json=body))
    try:

        def recorded() -> held.Pending | None:
            new = [p for p in held.Store(state).all_pending() if p.kernel_id not in before]
            return new[0] if new and unread_requests(gateway.port) else None

        pending = await eventually(
            recorded, timeout=30, what="the kernel start recorded and sent to the gateway"
        )
        assert pending.path == path and pending.session_id
        relay.stop(signal.SIGKILL)
        retried = None
        if retry is not None:
            again = {"path": path, "type": "notebook", "kernel": {"name": retry[1]}}
            retried = asyncio.ensure_future(client.post(retry[0].base + "api/sessions", json=again))
    finally:
        gateway.proc.send_signal(signal.SIGCONT)
    with pytest.raises(aiohttp.ClientError):
        async with await creating:
            pass
    await eventually(
        lambda: _has(direct, gateway, pending.kernel_id),
        timeout=60,
        what=f"the gateway runs kernel {pending.kernel_id}, started under the relay's id",
    )
    return pending, retried


async def _has(direct: aiohttp.ClientSession, gateway: KernelGateway, kernel_id: str) -> bool:
    return kernel_id in await gateway_kernels(direct, gateway)


async def _lacks(direct: aiohttp.ClientSession, gateway: KernelGateway, kernel_id: str) -> bool:
    return not await _has(direct, gateway, kernel_id)


async def test_a_relay_killed_while_creating_a_session_leaves_no_orphan(
    gateway: KernelGateway,
    direct: aiohttp.ClientSession,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    relays = [start(state, gateway, "eg"), start(state, gateway, "gw")]  # gw: a peer
    peer = relays[1]
    try:
        # 1. Killed mid-creation, restarted: the kernel is re-bound to its session.
        first, _ = await killed_mid_creation(
            client, relays[0], gateway, direct, state, "rebound.ipynb"
        )
        relays[0] = start(state, gateway, "eg")

        async def rebound() -> bool:
            listed = {s["kernel"]["id"]: s for s in await sessions(client, peer)}
            return listed.get(first.kernel_id, {}).get("path") == "rebound.ipynb"

        await eventually(rebound, timeout=30, what="the restarted relay re-binds the kernel")
        said = relays[0].logs()
        assert f"reconciled: kernel {first.kernel_id}" in said and "re-bound" in said, said
        # The client that retries its notebook gets that session, not another kernel.
        retry = {"path": "rebound.ipynb", "type": "notebook", "kernel": {"name": "eg--python3"}}
        async with client.post(relays[0].base + "api/sessions", json=retry) as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["kernel"]["id"] == first.kernel_id

        # 2. Killed mid-creation, and the client retries through the peer meanwhile:
        # the notebook has a session, so the kernel started for it first is shut down.
        second, retried = await killed_mid_creation(
            client, relays[0], gateway, direct, state, "retried.ipynb", (peer, "gw--python3")
        )
        assert retried is not None
        async with await retried as resp:
            assert resp.status == 201, await resp.text()
            kept = (await resp.json())["kernel"]["id"]
        assert kept != second.kernel_id
        relays[0] = start(state, gateway, "eg")
        await eventually(
            lambda: _lacks(direct, gateway, second.kernel_id),
            timeout=30,
            what="the restarted relay shuts the kernel down",
        )
        said = relays[0].logs()
        assert f"reconciled: kernel {second.kernel_id}" in said and "shut down" in said, said
        async with client.get(relays[0].base + "relay/api/status") as resp:
            status = await resp.json()
        what = [r["what"] for r in status["reconciled"]]
        assert any(second.kernel_id in w and "shut down" in w for w in what), status
        assert status["pending_kernel_starts"] == 0
        async with client.get(relays[0].base + "relay/") as resp:
            page = await resp.text()
        assert "Kernels reconciled" in page and second.kernel_id in page, page

        # No kernel on the gateway that no session knows, and nothing left pending.
        known = {s["kernel"]["id"] for s in await sessions(client, peer)}
        assert await gateway_kernels(direct, gateway) == known == {first.kernel_id, kept}
        assert held.Store(state).all_pending() == []
        for session in await sessions(client, peer):
            async with client.delete(f"{peer.base}api/sessions/{session['id']}") as resp:
                assert resp.status == 204
    finally:
        for relay in relays:
            with contextlib.suppress(Exception):
                relay.stop()
