"""Big bodies stream through the `jupyter-relay` command: bytes intact, memory flat.

The relay runs as the real command in front of a real Jupyter server, so its
resident memory can be sampled on its pid while 1 GiB comes down through
`/files/` and 200 MiB go up through the contents API. Figures are printed for
`pytest -s`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType

import aiohttp
import psutil

from .conftest import RELAY_TOKEN
from .servers import JupyterServer, RelayProcess

MiB = 1024 * 1024
DOWNLOAD_SIZE = 1024 * MiB
UPLOAD_SIZE = 200 * MiB
RSS_BOUND = 64 * MiB
# Upload chunks are base64-encoded one by one, so all but the last are a multiple of 3.
UPLOAD_CHUNK = 3 * 256 * 1024
AUTH = {"Authorization": f"token {RELAY_TOKEN}"}


class RssSampler:
    """Polls a process's resident set size from a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, int(self.process.memory_info().rss))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> RssSampler:
        self.baseline = self.peak = int(self.process.memory_info().rss)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def pattern(index: int, block: bytes) -> bytes:
    """A block of random bytes that differs from every other block by its index."""
    return index.to_bytes(8, "big") + block[8:]


def report(what: str, size: int, seconds: float, rss: RssSampler, wire: int = 0) -> None:
    on_wire = f" ({wire / MiB:.0f} MiB of JSON on the wire)" if wire else ""
    print(
        f"\n{what}: {size / MiB:.0f} MiB{on_wire} in {seconds:.2f} s = "
        f"{size / MiB / seconds:.0f} MiB/s; "
        f"relay RSS {rss.baseline / MiB:.1f} MiB -> peak {rss.peak / MiB:.1f} MiB "
        f"(growth {rss.growth / MiB:.1f} MiB, {rss.samples} samples)"
    )


async def warm_up(http: aiohttp.ClientSession, relay: RelayProcess) -> None:
    """One small request first, so pools and buffers exist before the baseline."""
    async with http.get(relay.base + "api/contents") as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def test_download_1gib_streams(
    relay_proc: RelayProcess, jupyter: JupyterServer, bulk_client: aiohttp.ClientSession
) -> None:
    name = f"stream-down-{os.getpid()}.bin"
    path = jupyter.root / name
    block = os.urandom(MiB)
    expected = hashlib.sha256()
    try:
        with path.open("wb") as out:
            for index in range(DOWNLOAD_SIZE // MiB):
                chunk = pattern(index, block)
                expected.update(chunk)
                out.write(chunk)
        await warm_up(bulk_client, relay_proc)

        got = hashlib.sha256()
        received = 0
        with RssSampler(relay_proc.proc.pid) as rss:
            started = time.monotonic()
            async with bulk_client.get(relay_proc.base + f"files/{name}") as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers.get("Content-Length") == str(DOWNLOAD_SIZE)
                async for chunk in resp.content.iter_any():
                    got.update(chunk)
                    received += len(chunk)
            elapsed = time.monotonic() - started
        report("download", received, elapsed, rss)
        assert received == DOWNLOAD_SIZE
        assert got.hexdigest() == expected.hexdigest()
        assert rss.growth <= RSS_BOUND, f"relay RSS grew by {rss.growth / MiB:.1f} MiB"
    finally:
        path.unlink(missing_ok=True)


async def test_upload_200mib_streams(
    relay_proc: RelayProcess, jupyter: JupyterServer, bulk_client: aiohttp.ClientSession
) -> None:
    name = f"stream-up-{os.getpid()}.bin"
    path = jupyter.root / name
    block = os.urandom(UPLOAD_CHUNK)
    expected = hashlib.sha256()
    sent = wire = 0

    async def body() -> AsyncIterator[bytes]:
        """The JSON model, its base64 content made chunk by chunk as it is sent."""
        nonlocal sent, wire
        prefix = b'{"type": "file", "format": "base64", "content": "'
        wire += len(prefix)
        yield prefix
        index = 0
        while sent < UPLOAD_SIZE:
            chunk = pattern(index, block)[: UPLOAD_SIZE - sent]
            expected.update(chunk)
            sent += len(chunk)
            index += 1
            encoded = base64.b64encode(chunk)
            wire += len(encoded)
            yield encoded
        wire += 2
        yield b'"}'

    try:
        await warm_up(bulk_client, relay_proc)
        with RssSampler(relay_proc.proc.pid) as rss:
            started = time.monotonic()
            async with bulk_client.put(
                relay_proc.base + f"api/contents/{name}",
                data=body(),
                headers={"Content-Type": "application/json"},
            ) as resp:
                text = await resp.text()
                assert resp.status in (200, 201), text
            elapsed = time.monotonic() - started
        report("upload", sent, elapsed, rss, wire)
        model = json.loads(text)
        assert model["name"] == name
        assert model["type"] == "file"
        assert sent == UPLOAD_SIZE
        assert path.stat().st_size == UPLOAD_SIZE
        on_disk = hashlib.sha256()
        with path.open("rb") as src:
            while chunk := src.read(4 * MiB):
                on_disk.update(chunk)
        assert on_disk.hexdigest() == expected.hexdigest()
        assert rss.growth <= RSS_BOUND, f"relay RSS grew by {rss.growth / MiB:.1f} MiB"
    finally:
        path.unlink(missing_ok=True)
