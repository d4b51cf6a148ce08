"""Scenario 4, large transfer: a 1 GiB download and a 256 MiB upload, one at a time.

Each direction runs three times per path (two with `--quick`); the median
MB/s and the highest peak RSS growth are kept.

curl is the client (C, writes the download to /dev/null, streams the upload
from a file with `-T`; `Expect:` is sent empty so no path waits for a
100-continue). The download is nginx's sendfile of a sparse file; the upload
goes to the node sink, which answers how many bytes it read, so the time
covers the whole body reaching the backend. While each transfer runs, the
proxy's resident memory (with its children: nginx's worker) is sampled every
20 ms: its peak growth over the value before the transfer is the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from ..backends import NODE, WEB
from ..nginx import BIG_PATH
from ..paths import JSP, RUN_PATHS, ProxyPath
from ..procs import Child
from ..settings import MIB
from .base import Context, Metric, Metrics, PartialResult, Scenario, median, run_command

SAMPLE_S = 0.02
# Why a peer fails a transfer, when it is by design: said with the failure.
KNOWN_LIMITS = {
    (JSP, "download"): (
        " (jupyter-server-proxy buffers a whole response; its HTTP client refuses"
        " bodies over 100 MB, tornado's max_body_size)"
    ),
}
WRITE_OUT = "\n%{http_code} %{size_download} %{size_upload} %{time_total}"


class PeakRss:
    """Samples a process tree's resident memory in the background; keeps the peak."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.baseline = child.rss()
        self.peak = self.baseline

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.child.rss())
            await asyncio.sleep(SAMPLE_S)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PeakRss]:
        task = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.peak = max(self.peak, self.child.rss())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / MIB


async def curl(
    ctx: Context, url: str, upload: Path | None, size: int, timeout: float
) -> tuple[str, float]:
    """Transfer `size` bytes once; return the response body and the seconds curl took."""
    cmd = ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: token {ctx.token}"]
    if upload is None:
        cmd += ["-o", "/dev/null"]
    else:
        cmd += ["-X", "POST", "-T", str(upload), "-H", "Expect:"]
        cmd += ["-H", "Content-Type: application/octet-stream"]
    cmd += ["-w", WRITE_OUT, url]
    out = await run_command(cmd, timeout=timeout)
    body, _, summary = out.rpartition("\n")
    status, downloaded, uploaded, seconds = summary.split()
    if status != "200":
        raise RuntimeError(f"HTTP {status}: {body[:300]}")
    moved = int(float(uploaded if upload is not None else downloaded))
    if moved != size:
        raise RuntimeError(f"moved {moved} bytes of {size}")
    return body, float(seconds)


async def transfer_mb_per_s(ctx: Context, url: str, upload: Path | None, size: int) -> float:
    """MB/s of one transfer of `size` bytes: a download from `url`, or `upload` to its sink.

    The upload sink (the node backend's `/upload`) answers how many bytes it read:
    anything but `size` is an error, so the time covers every byte reaching it.
    """
    timeout = 60 + size / MIB  # at least 1 MiB/s
    body, seconds = await curl(ctx, url, upload, size, timeout)
    if upload is not None and json.loads(body).get("bytes") != size:
        raise RuntimeError(f"the backend read {body[:100]}, not {size} bytes")
    return size / seconds / 1e6


def make_sparse(path: Path, size: int) -> None:
    """A file of `size` zero bytes that takes no disk."""
    with path.open("wb") as f:
        f.truncate(size)


def read_through(path: Path) -> None:
    """Read a file once: its pages are in the page cache afterwards."""
    with path.open("rb") as f:
        while f.read(8 * MIB):
            pass


class LargeTransfer(Scenario):
    name = "large_transfer"
    title = "Large transfer"
    paths = RUN_PATHS
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("download_mb_per_s", "download", "MB/s", True, headline=True),
        Metric("upload_mb_per_s", "upload", "MB/s", True, headline=True),
        Metric("download_rss_growth_mib", "download: peak RSS growth", "MiB", False, True),
        Metric("upload_rss_growth_mib", "upload: peak RSS growth", "MiB", False, True),
        Metric("peak_rss_growth_mib", "peak RSS growth, either", "MiB", False, True, True),
    )

    def __init__(self) -> None:
        self.upload_file = Path()

    @contextlib.asynccontextmanager
    async def prepared(self, ctx: Context) -> AsyncIterator[None]:
        self.upload_file = ctx.workdir / "upload.bin"
        await asyncio.to_thread(make_sparse, self.upload_file, ctx.settings.upload_bytes)
        # The first read of a sparse file fills the page cache with zeroed pages: do it
        # now, so that the first path measured does not pay for it.
        await asyncio.to_thread(read_through, ctx.backends.big_file)
        await asyncio.to_thread(read_through, self.upload_file)
        try:
            yield
        finally:
            self.upload_file.unlink(missing_ok=True)

    async def _transfer(
        self, ctx: Context, path: ProxyPath, backend: str, upload: bool
    ) -> tuple[float, float | None]:
        """MB/s of one transfer, and the proxy's peak RSS growth in MiB (None for direct)."""
        size = ctx.settings.upload_bytes if upload else ctx.settings.download_bytes
        url = path.url(backend, "upload" if upload else BIG_PATH)
        server = path.servers.get(backend)
        sampler = PeakRss(server) if server is not None else None
        async with sampler.running() if sampler else contextlib.nullcontext():
            rate = await transfer_mb_per_s(ctx, url, self.upload_file if upload else None, size)
        return rate, sampler.growth_mib if sampler else None

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        metrics: Metrics = {}
        errors = []
        for kind, backend, upload in (("download", WEB, False), ("upload", NODE, True)):
            rates, growths = [], []
            try:
                for _ in range(ctx.settings.transfer_repeats):
                    rate, growth = await self._transfer(ctx, path, backend, upload)
                    rates.append(rate)
                    if growth is not None:
                        growths.append(growth)
            except RuntimeError as exc:
                errors.append(f"{kind}: {exc}{KNOWN_LIMITS.get((path.name, kind), '')}")
                continue
            metrics[f"{kind}_mb_per_s"] = median(rates)
            if growths:
                metrics[f"{kind}_rss_growth_mib"] = max(growths)
        growths = [v for k, v in metrics.items() if k.endswith("_rss_growth_mib")]
        if growths:
            metrics["peak_rss_growth_mib"] = max(growths)
        if errors:
            raise PartialResult(metrics, "; ".join(errors))
        return metrics
