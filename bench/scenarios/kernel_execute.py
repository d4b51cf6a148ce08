"""Scenario 3, kernel execute round trips: a real ipykernel behind a real `jupyter server`.

Sequential `execute_request`s of `1` over one kernel websocket, each timed
from sending the request to receiving its `execute_reply`; the next request
goes once the kernel reported idle. Three clients: the tests' kernel-protocol
client with the v1 subprotocol (the headline) and with the legacy JSON
protocol, and JupyterLab's own `@jupyterlab/services` from npm. Direct and
through the relay only: the point is the ~40 ms a direct client waits for a
delayed ACK on every execute (jupyter_server never sets TCP_NODELAY on kernel
websockets), which the relay is meant to remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import aiohttp
from tests import kernel_client

from ..backends import BENCH_DIR, JUPYTER
from ..paths import DIRECT, RELAY, ProxyPath
from .base import Context, Metric, Metrics, Scenario, median, percentile, run_command

SERVICES_EXECUTE = BENCH_DIR / "services_execute.mjs"
WARMUP = 3
VARIANTS = ("v1", "legacy", "services")


async def start_kernel(ctx: Context, base: str) -> str:
    """Start a python3 kernel on the Jupyter server at `base` (directly); return its id."""
    async with (
        aiohttp.ClientSession(headers=ctx.headers) as session,
        session.post(base + "api/kernels", json={"name": "python3"}) as resp,
    ):
        if resp.status != 201:
            raise RuntimeError(f"cannot start a kernel: HTTP {resp.status} {await resp.text()}")
        kernel_id: str = (await resp.json())["id"]
        return kernel_id


async def stop_kernel(ctx: Context, base: str, kernel_id: str) -> None:
    async with (
        aiohttp.ClientSession(headers=ctx.headers) as session,
        session.delete(f"{base}api/kernels/{kernel_id}"),
    ):
        pass


@contextlib.asynccontextmanager
async def kernel(ctx: Context, base: str) -> AsyncIterator[str]:
    """A kernel on the Jupyter server at `base` for a block; its id."""
    kernel_id = await start_kernel(ctx, base)
    try:
        yield kernel_id
    finally:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await stop_kernel(ctx, base, kernel_id)


async def _execute_once(ws: aiohttp.ClientWebSocketResponse, session: str) -> float:
    """Run `1`; return the seconds from sending the request to its execute_reply."""
    msg = kernel_client.make_message(
        "execute_request",
        {
            "code": "1",
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        session,
    )
    msg_id = msg["header"]["msg_id"]
    started = time.perf_counter()
    await kernel_client.send(ws, msg)
    replied: float | None = None
    idle = False
    while replied is None or not idle:
        incoming = await kernel_client.receive(ws)
        if incoming.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = incoming["header"]["msg_type"]
        if kind == "execute_reply":
            replied = time.perf_counter()
            if incoming["content"]["status"] != "ok":
                raise RuntimeError(f"execute_reply status {incoming['content']['status']}")
        elif kind == "status" and incoming["content"]["execution_state"] == "idle":
            idle = True
    return replied - started


async def python_round_trips(
    ctx: Context, path: ProxyPath, kernel_id: str, v1: bool, count: int
) -> list[float]:
    """`count` timed executes (ms) with the tests' client, v1 or legacy protocol."""
    session_id = uuid.uuid4().hex
    url = path.ws_url(JUPYTER, f"api/kernels/{kernel_id}/channels?session_id={session_id}")
    protocols = [kernel_client.V1] if v1 else []
    async with (
        aiohttp.ClientSession(headers=ctx.headers) as session,
        session.ws_connect(url, protocols=protocols, max_msg_size=0) as ws,
    ):
        expected = kernel_client.V1 if v1 else None
        if ws.protocol != expected:
            raise RuntimeError(f"the server chose the protocol {ws.protocol!r}, not {expected!r}")
        times = []
        for i in range(WARMUP + count):
            seconds = await _execute_once(ws, session_id)
            if i >= WARMUP:
                times.append(seconds * 1000)
        return times


async def services_round_trips(
    ctx: Context, path: ProxyPath, kernel_id: str, count: int
) -> list[float]:
    """`count` timed executes (ms) with @jupyterlab/services in node."""
    cmd = ["node", str(SERVICES_EXECUTE), path.url(JUPYTER), kernel_id, str(count), str(WARMUP)]
    env = {**os.environ, "BENCH_TOKEN": ctx.token}
    out = await run_command(cmd, env=env, cwd=BENCH_DIR, timeout=60 + count * 0.5)
    result = json.loads(out.strip().splitlines()[-1])
    if result["protocol"] != kernel_client.V1:
        raise RuntimeError(f"@jupyterlab/services got the protocol {result['protocol']!r}")
    times: list[float] = result["times_ms"]
    return times


# The figures of one path: median and p99 of each client; the medians are headlines.
EXECUTE_METRICS = tuple(
    Metric(
        f"{variant}_{stat}_ms",
        f"{variant}: {stat}, request to reply",
        "ms",
        False,
        headline=stat == "median",
    )
    for variant in VARIANTS
    for stat in ("median", "p99")
)


def executes_timeout(v1: int, other: int) -> float:
    """The most `v1` executes and `other` of each other client may take on one path."""
    return 120 + (v1 + 2 * other) * 0.2


async def measure_executes(
    ctx: Context, path: ProxyPath, kernel_id: str, v1: int, other: int
) -> Metrics:
    """Round trips to `kernel_id` through `path`, `v1` with the v1 protocol and `other`
    with each other client: EXECUTE_METRICS."""
    runs = {
        "v1": await python_round_trips(ctx, path, kernel_id, True, v1),
        "legacy": await python_round_trips(ctx, path, kernel_id, False, other),
        "services": await services_round_trips(ctx, path, kernel_id, other),
    }
    metrics: Metrics = {}
    for variant, times in runs.items():
        metrics[f"{variant}_median_ms"] = median(times)
        metrics[f"{variant}_p99_ms"] = percentile(times, 0.99)
    return metrics


class KernelExecute(Scenario):
    name = "kernel_execute"
    title = "Kernel execute round trip"
    paths = (DIRECT, RELAY)
    metrics: ClassVar[tuple[Metric, ...]] = EXECUTE_METRICS

    def __init__(self) -> None:
        self.kernel_id = ""

    @contextlib.asynccontextmanager
    async def prepared(self, ctx: Context) -> AsyncIterator[None]:
        async with kernel(ctx, ctx.backends.base(JUPYTER)) as kernel_id:
            self.kernel_id = kernel_id
            yield

    def timeout(self, ctx: Context) -> float:
        return executes_timeout(ctx.settings.executes_v1, ctx.settings.executes_other)

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        s = ctx.settings
        return await measure_executes(ctx, path, self.kernel_id, s.executes_v1, s.executes_other)
