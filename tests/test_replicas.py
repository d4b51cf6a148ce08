"""Replicas: three `jupyter-relay` processes sharing --state-dir, one SIGKILLed every few
seconds and restarted, under a load of clients spread over the survivors.

In front of one Kernel Gateway (sessions kept by the relays, in the shared sqlite
store) and a Jupyter server (sessions kept by Jupyter). The clients list sessions
and kernels, create and delete sessions and execute code over kernel websockets,
each on a relay that is up when the request starts. A request that fails because
its relay was killed under it is counted apart; any other failure fails the test.
Afterwards every relay lists every session created (and not deleted), and no kernel
runs on the gateway that no session knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jupyter_relay.mixer import held

from .conftest import RELAY_TOKEN
from .kernel_client import V1, execute
from .servers import (
    JupyterServer,
    KernelGateway,
    RelayProcess,
    start_kernel_gateway,
    start_relay_process,
)
from .waiting import eventually

REPLICAS = 3
SOAK_SECONDS = 30.0
KILL_EVERY = 3.0  # seconds between kills
CLIENTS = 4
LIVE_SESSIONS = 3  # each client keeps at most this many sessions


@dataclass
class Replica:
    """One relay process; `generation` changes when it is killed."""

    proc: RelayProcess
    generation: int = 0
    up: bool = True


@dataclass
class Tally:
    ok: int = 0
    killed_under: int = 0  # failed because their relay was SIGKILLed meanwhile
    kills: int = 0
    failures: list[str] = field(default_factory=list)
    by_op: dict[str, int] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)  # session id -> kernel id
    uncertain: set[str] = field(default_factory=set)  # deletes cut short by a kill


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[KernelGateway]:
    gw = start_kernel_gateway(tmp_path)
    yield gw
    gw.stop()


def start(state: Path, jupyter: JupyterServer, gateway: KernelGateway) -> RelayProcess:
    args = ["--port", "0", "--token", RELAY_TOKEN, "--state-dir", str(state)]
    args += ["--backend", f"lab={jupyter.backend_arg}", "--backend", f"eg={gateway.backend_arg}"]
    return start_relay_process(args, state.parent)


async def _list(client: aiohttp.ClientSession, base: str, what: str) -> list[Any]:
    async with client.get(f"{base}api/{what}") as resp:
        assert resp.status == 200, f"{resp.status}: {await resp.text()}"
        found = await resp.json()
        assert isinstance(found, list)
        return found


class Load:
    """The clients' work, on whichever relays are up."""

    def __init__(self, client: aiohttp.ClientSession, replicas: list[Replica]) -> None:
        self.client = client
        self.replicas = replicas
        self.tally = Tally()
        self.rng = random.Random(20)

    async def worker(self, n: int, until: float) -> None:
        mine: list[tuple[str, str]] = []  # (session id, kernel id)
        count = 0
        while time.monotonic() < until:
            count += 1
            up = [r for r in self.replicas if r.up]
            replica = self.rng.choice(up)
            generation, base = replica.generation, replica.proc.base
            op = self._choose(mine)
            try:
                async with asyncio.timeout(90):
                    await self._do(op, base, mine, n, count, generation, replica)
            except Exception as exc:  # every failure is counted
                if replica.generation != generation:
                    self.tally.killed_under += 1
                    if op == "delete" and mine:  # it may have been deleted, or not
                        session_id = mine.pop()[0]
                        self.tally.uncertain.add(session_id)
                        self.tally.created.pop(session_id, None)
                else:
                    self.tally.failures.append(f"{op} on {base}: {exc!r}"[:500])
            else:
                self.tally.ok += 1
                self.tally.by_op[op] = self.tally.by_op.get(op, 0) + 1

    def _choose(self, mine: list[tuple[str, str]]) -> str:
        if not mine:
            return "create"
        ops = ["sessions", "kernels", "execute", "execute"]
        ops.append("delete" if len(mine) >= LIVE_SESSIONS else "create")
        return self.rng.choice(ops)

    async def _do(
        self,
        op: str,
        base: str,
        mine: list[tuple[str, str]],
        n: int,
        count: int,
        generation: int,
        replica: Replica,
    ) -> None:
        if op in ("sessions", "kernels"):
            await _list(self.client, base, op)
        elif op == "create":
            spec = "python3" if count % 4 == 0 else "eg--python3"
            body = {"path": f"c{n}-{count}.ipynb", "type": "notebook", "kernel": {"name": spec}}
            async with self.client.post(base + "api/sessions", json=body) as resp:
                assert resp.status == 201, f"{resp.status}: {await resp.text()}"
                session = await resp.json()
            mine.append((session["id"], session["kernel"]["id"]))
            self.tally.created[session["id"]] = session["kernel"]["id"]
        elif op == "delete":
            session_id, _ = mine[-1]
            async with self.client.delete(f"{base}api/sessions/{session_id}") as resp:
                assert resp.status == 204, f"{resp.status}: {await resp.text()}"
            mine.pop()
            del self.tally.created[session_id]
        else:
            _, kernel_id = self.rng.choice(mine)
            url = f"{base}api/kernels/{kernel_id}/channels"
            async with self.client.ws_connect(url, protocols=(V1,)) as ws:
                out, reply = await execute(ws, "print(6 * 7)")
            assert reply["content"]["status"] == "ok" and out.strip() == "42", (out, reply)

    async def killer(self, until: float, restart: Any) -> None:
        """Every KILL_EVERY s, SIGKILL the next relay that is up (two stay up at least),
        and start it again meanwhile."""
        turn = 0
        restarts: list[asyncio.Task[None]] = []
        while time.monotonic() + KILL_EVERY < until:
            await asyncio.sleep(KILL_EVERY)
            up = [r for r in self.replicas if r.up]
            if len(up) < 2:
                continue
            replica = up[turn % len(up)]
            turn += 1
            replica.up = False
            replica.generation += 1
            replica.proc.stop(signal.SIGKILL)
            self.tally.kills += 1
            restarts.append(asyncio.create_task(self._restart(replica, restart)))
        await asyncio.gather(*restarts)

    async def _restart(self, replica: Replica, restart: Any) -> None:
        replica.proc = await asyncio.to_thread(restart)
        replica.up = True


async def test_three_replicas_one_killed_every_few_seconds_lose_nothing(
    jupyter: JupyterServer,
    gateway: KernelGateway,
    client: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()

    def restart() -> RelayProcess:
        return start(state, jupyter, gateway)

    replicas = [
        Replica(proc)
        for proc in await asyncio.gather(*(asyncio.to_thread(restart) for _ in range(REPLICAS)))
    ]
    load = Load(client, replicas)
    began = time.monotonic()
    until = began + SOAK_SECONDS
    try:
        await asyncio.gather(
            load.killer(until, restart), *(load.worker(n, until) for n in range(CLIENTS))
        )
        tally = load.tally
        print(
            f"\nreplica soak: {time.monotonic() - began:.1f} s, {REPLICAS} relays, "
            f"{tally.kills} kills, {tally.ok} requests ok {tally.by_op}, "
            f"{len(tally.failures)} failed on survivors, "
            f"{tally.killed_under} cut short on a relay being killed"
        )
        assert not tally.failures, "\n".join(tally.failures)
        assert tally.kills >= SOAK_SECONDS // KILL_EVERY - 2, tally.kills
        assert tally.by_op.get("create", 0) >= 5 and tally.by_op.get("execute", 0) >= 5

        # Nothing lost: every relay lists every session created and not deleted.
        for replica in replicas:
            listed = {s["id"] for s in await _list(client, replica.proc.base, "sessions")}
            missing = set(tally.created) - listed
            assert not missing, f"{replica.proc.base} does not list {missing}"

        # A relay restarted now reconciles what the kills left pending: then no kernel
        # runs on the gateway that no session knows.
        replicas[0].proc.stop(signal.SIGKILL)
        replicas[0].proc = restart()

        async def no_orphans() -> bool:
            sessions = await _list(client, replicas[0].proc.base, "sessions")
            known = {s["kernel"]["id"] for s in sessions}
            headers = {"Authorization": f"token {gateway.token}"}
            async with (
                aiohttp.ClientSession(headers=headers) as direct,
                direct.get(gateway.base + "api/kernels") as resp,
            ):
                running = {k["id"] for k in await resp.json()}
            pending = {p.kernel_id for p in held.Store(state).all_pending()}
            return running <= known and not (running & pending)

        await eventually(no_orphans, timeout=60, what="every gateway kernel has a session")
    finally:
        for replica in replicas:
            with contextlib.suppress(Exception):
                for session in await _list(client, replica.proc.base, "sessions"):
                    url = f"{replica.proc.base}api/sessions/{session['id']}"
                    async with client.delete(url):
                        pass
                break
        for replica in replicas:
            replica.proc.stop()
