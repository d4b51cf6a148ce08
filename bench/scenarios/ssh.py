"""Scenario 7, Jupyter over SSH: the relay's `ssh` backend beside OpenSSH's `ssh -L`.

One Jupyter behind one real loopback sshd (bench/ssh.py starts both, with
`ssh -N -L` and a relay with `--backend gpu=ssh://gpu-box?ssh_config=...`), three
ways in: `direct` (no SSH), `ssh_l` (what users do today) and `relay`. Each path
gets the same measurements, made by the other scenarios' functions:

- kernel executes of the three clients (kernel_execute): the medians are the
  headline, since a stall on the far side shows in every round trip;
- a download of a sparse file from Jupyter's `/files/` (curl): Jupyter's file
  handler streams it from the page cache;
- an upload to the node backend's sink on the far side, `/proxy/gpu:<port>/upload`
  through the relay, the forwarded port through `ssh -L`: Jupyter's contents API
  (base64 in JSON, written to disk) would measure Jupyter, not the tunnel;
- the JupyterLab cold page load (page_load), measured before the rest and
  round-robin over the three paths (one load of each in turn, the order turned
  by one each round, so each path is first, second and third as often): the
  loads run Chromium, the heaviest thing here, and a path measured after
  another's transfers and load generators (or later as the machine drifts) was
  up to 1.2x slower for it, where interleaved the paths were level. A load
  varies by ±10% here (2 cores, Chromium compiling ~5 MB of JavaScript), so 9
  loads a path;
- the port proxy to the ssh backend's ports (issue 19's requirement 4): small HTTP
  with wrk and the same download from nginx, and the websocket ping-pong through
  the node echo, the relay's `/proxy/gpu:<port>/` beside `ssh -L` to that port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from playwright.async_api import Browser

from ..backends import JUPYTER, NODE, WEB
from ..nginx import SMALL_PATH
from ..paths import DIRECT, RELAY, SSH_L, ProxyPath
from ..ssh import BIG_NAME, SshWorld, start_world
from .base import Context, Metric, Metrics, Scenario, median
from .kernel_execute import EXECUTE_METRICS, executes_timeout, kernel, measure_executes
from .large_transfer import make_sparse, read_through, transfer_mb_per_s
from .page_load import chromium, cold_load
from .small_http import measure_wrk
from .websocket import ws_load


async def _stop_world(starting: asyncio.Task[SshWorld]) -> None:
    """Stop the machine once started; if it failed to start, it stopped what it had started."""
    try:
        world = await starting
    except Exception:
        return
    await asyncio.to_thread(world.stop)


class Ssh(Scenario):
    name = "ssh"
    title = "Jupyter over SSH"
    paths = (DIRECT, SSH_L, RELAY)
    metrics: ClassVar[tuple[Metric, ...]] = (
        *EXECUTE_METRICS,
        Metric("download_mb_per_s", "download from Jupyter /files/", "MB/s", True, headline=True),
        Metric("upload_mb_per_s", "upload to a port's sink", "MB/s", True, headline=True),
        Metric("page_load_s", "JupyterLab median cold load", "s", False, headline=True),
        Metric("port_requests_per_s", "port: small HTTP", "req/s", True, headline=True),
        Metric("port_p99_ms", "port: small HTTP p99", "ms", False),
        Metric("port_download_mb_per_s", "port: download from nginx", "MB/s", True, headline=True),
        Metric("port_ws_messages_per_s", "port: websocket ping-pong", "msg/s", True, headline=True),
    )

    def __init__(self) -> None:
        self.world: SshWorld | None = None
        self.kernel_id = ""
        self.browser: Browser | None = None
        self.upload_file = Path()
        self.page_loads: dict[str, list[float]] = {}

    def path(self, ctx: Context, name: str) -> ProxyPath:
        assert self.world is not None
        return self.world.paths[name]

    @contextlib.asynccontextmanager
    async def prepared(self, ctx: Context) -> AsyncIterator[None]:
        size = ctx.settings.ssh_transfer_bytes
        self.upload_file = ctx.workdir / "ssh-upload.bin"
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.upload_file.unlink, missing_ok=True)
            # The machine starts (in a thread) while Chromium does.
            starting = asyncio.create_task(
                asyncio.to_thread(start_world, ctx.workdir / "ssh", ctx.backends, size)
            )
            stack.push_async_callback(_stop_world, starting)
            self.browser = await stack.enter_async_context(chromium())
            await asyncio.to_thread(make_sparse, self.upload_file, size)
            world = await starting
            # The first read of a sparse file fills the page cache: not in the first path's time.
            for big in [self.upload_file, *world.big_files]:
                await asyncio.to_thread(read_through, big)
            direct = world.paths[DIRECT]
            self.kernel_id = await stack.enter_async_context(kernel(ctx, direct.url(JUPYTER)))
            self.world = world
            self.page_loads = await self._page_loads(ctx, world)
            try:
                yield
            finally:
                self.world = self.browser = None

    async def _page_loads(self, ctx: Context, world: SshWorld) -> dict[str, list[float]]:
        """Cold loads of every path, one of each in turn (after a warm-up of each)."""
        assert self.browser is not None
        paths = [world.paths[name] for name in self.paths]
        loads: dict[str, list[float]] = {p.name: [] for p in paths}
        rounds = ctx.settings.ssh_page_loads + (1 if ctx.settings.page_warmup else 0)
        for round_ in range(rounds):
            turn = round_ % len(paths)
            for path in paths[turn:] + paths[:turn]:
                seconds = await cold_load(self.browser, ctx, path)
                if round_ or not ctx.settings.page_warmup:
                    loads[path.name].append(seconds)
        return loads

    def timeout(self, ctx: Context) -> float:
        s = ctx.settings
        return executes_timeout(s.ssh_executes_v1, s.ssh_executes_other) + 300

    async def _rate(self, ctx: Context, url: str, upload: bool) -> float:
        """The median MB/s of the settings' repeats of one transfer."""
        size = ctx.settings.ssh_transfer_bytes
        rates = [
            await transfer_mb_per_s(ctx, url, self.upload_file if upload else None, size)
            for _ in range(ctx.settings.transfer_repeats)
        ]
        return median(rates)

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        assert self.browser is not None
        s = ctx.settings
        metrics = await measure_executes(
            ctx, path, self.kernel_id, s.ssh_executes_v1, s.ssh_executes_other
        )
        metrics["download_mb_per_s"] = await self._rate(
            ctx, path.url(JUPYTER, f"files/{BIG_NAME}"), False
        )
        metrics["upload_mb_per_s"] = await self._rate(ctx, path.url(NODE, "upload"), True)
        wrk = await measure_wrk(ctx, path.url(WEB, SMALL_PATH))
        metrics["port_requests_per_s"] = wrk["requests_per_s"]
        metrics["port_p99_ms"] = wrk["p99_ms"]
        metrics["port_download_mb_per_s"] = await self._rate(ctx, path.url(WEB, BIG_NAME), False)
        ws_url = path.ws_url(NODE, "echo")
        pingpong = await ws_load(ctx, ws_url, "pingpong", s.ws_connections, s.ws_message_bytes)
        metrics["port_ws_messages_per_s"] = pingpong["messages_per_s"]
        metrics["page_load_s"] = median(self.page_loads[path.name])
        return metrics
