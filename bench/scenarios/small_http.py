"""Scenario 1, small HTTP requests: wrk, 32 keep-alive connections, ~100 bytes of JSON.

wrk (Debian's) is the load generator: C, epoll, and its `--latency`
histogram gives p50 and p99. It runs ONE thread: on 2 cores the load
generator, the proxy and the backend share the CPUs, and one wrk thread
already drives nginx's `return 200` far past any proxy here. The caveat
stands all the same: every figure is of a machine where the load generator
takes CPU the proxy could have used.
"""

from __future__ import annotations

import re
from typing import ClassVar

from ..backends import WEB
from ..nginx import SMALL_PATH
from ..paths import RUN_PATHS, ProxyPath
from .base import Context, Metric, Metrics, Scenario, run_command

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
LATENCY_RE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
RATE_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
TOTAL_RE = re.compile(r"^\s+(\d+) requests in", re.MULTILINE)
NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def parse_wrk(output: str) -> Metrics:
    """requests/s, p50 and p99 in ms, and the count of failed requests, from wrk's report."""
    rate = RATE_RE.search(output)
    total = TOTAL_RE.search(output)
    latencies = {q: float(v) * UNITS[unit] for q, v, unit in LATENCY_RE.findall(output)}
    if rate is None or total is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    non_2xx = NON_2XX_RE.search(output)
    socket_errors = SOCKET_ERRORS_RE.search(output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        # Reads fail when wrk closes its connections at the end: not the proxy's fault.
        failed += int(socket_errors.group(1)) + int(socket_errors.group(4))
    return {
        "requests_per_s": float(rate.group(1)),
        "p50_ms": latencies["50"],
        "p99_ms": latencies["99"],
        "requests": float(total.group(1)),
        "failed": float(failed),
    }


async def wrk(ctx: Context, url: str, seconds: float) -> Metrics:
    """One wrk run of the settings' threads and connections against `url`."""
    s = ctx.settings
    cmd = [
        "wrk",
        f"-t{s.wrk_threads}",
        f"-c{s.http_connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"Authorization: token {ctx.token}",
        url,
    ]
    return parse_wrk(await run_command(cmd, timeout=seconds + 60))


async def measure_wrk(ctx: Context, url: str) -> Metrics:
    """A warm-up run (connections to the backend opened, caches settled), then the measured one."""
    await wrk(ctx, url, ctx.settings.http_warmup_s)
    result = await wrk(ctx, url, ctx.settings.http_seconds)
    if result["failed"]:
        raise RuntimeError(f"{result['failed']:.0f} of {result['requests']:.0f} requests failed")
    return result


class SmallHttp(Scenario):
    name = "small_http"
    title = "Small HTTP requests"
    paths = RUN_PATHS
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("requests_per_s", "throughput", "req/s", True, headline=True),
        Metric("p50_ms", "p50 latency", "ms", False),
        Metric("p99_ms", "p99 latency", "ms", False, headline=True),
    )

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        return await measure_wrk(ctx, path.url(WEB, SMALL_PATH))
