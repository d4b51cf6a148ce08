"""1 GiB through `/proxy/<port>/` of the `jupyter-relay` command: bytes intact, memory flat.

jupyter-server-proxy buffers whole responses (and refuses bodies over 100 MB); the relay
streams. The app (tests/webapps.py, as its own process) generates the bytes as it sends
them; the relay runs as the real command so its resident memory can be sampled on its
pid, with the same bound as the core's 1 GiB test (test_streaming.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .proxying import proxy_command, url, webapp_command
from .servers import RelayProcess, free_port, stop_process, wait_http
from .test_streaming import RSS_BOUND, MiB, RssSampler
from .webapps import pattern_sha256

SIZE = 1024 * MiB


@pytest.fixture
def webapp_port(tmp_path: Path) -> Iterator[int]:
    """tests/webapps.py as a process of its own, on a free port."""
    port = free_port()
    with (tmp_path / "webapp.log").open("wb") as log:
        proc = subprocess.Popen(
            webapp_command(str(port)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout=30, proc=proc)
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
def relay(webapp_port: int, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = proxy_command(["--backend", f"web=http://127.0.0.1:{webapp_port}/"], tmp_path)
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.logs()


async def test_1_gib_download_streams_through_the_port_proxy(
    relay: RelayProcess, webapp_port: int, bulk_client: aiohttp.ClientSession
) -> None:
    expected = asyncio.create_task(asyncio.to_thread(pattern_sha256, SIZE))
    prefix = f"/proxy/{webapp_port}"
    # Warm up: pools and buffers exist before the baseline.
    async with bulk_client.get(url(relay.base, f"{prefix}/_download?size={MiB}")) as resp:
        assert resp.status == 200, await resp.text()
        assert len(await resp.read()) == MiB

    got = hashlib.sha256()
    received = 0
    with RssSampler(relay.proc.pid) as rss:
        started = time.monotonic()
        async with bulk_client.get(url(relay.base, f"{prefix}/_download?size={SIZE}")) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers.get("Content-Length") == str(SIZE)
            async for chunk in resp.content.iter_any():
                got.update(chunk)
                received += len(chunk)
        elapsed = time.monotonic() - started
    print(
        f"\n1 GiB through /proxy/<port>/ in {elapsed:.2f} s "
        f"({received / MiB / elapsed:.0f} MiB/s); "
        f"relay RSS {rss.baseline / MiB:.1f} -> peak {rss.peak / MiB:.1f} MiB "
        f"(growth {rss.growth / MiB:.1f} MiB, {rss.samples} samples)"
    )
    assert received == SIZE
    assert got.hexdigest() == await expected
    assert rss.samples > 3, rss.samples
    assert rss.growth <= RSS_BOUND, f"relay RSS grew by {rss.growth / MiB:.1f} MiB"
