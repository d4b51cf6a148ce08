"""Scenario 2, websocket messages through each path to the node echo backend.

Two runs of `ws_load.mjs` per path: 8 connections ping-ponging 100-byte text
messages (messages/s, p50/p99 round trip), then one connection streaming
1 MB binary messages with a few in flight (messages/s, MB/s, p50/p99 from
send to echo).
"""

from __future__ import annotations

import json
import os
from typing import ClassVar

from ..backends import BENCH_DIR, NODE
from ..paths import RUN_PATHS, ProxyPath
from .base import Context, Metric, Metrics, Scenario, run_command

WS_LOAD = BENCH_DIR / "ws_load.mjs"


async def ws_load(
    ctx: Context, url: str, mode: str, connections: int, size: int
) -> dict[str, float]:
    """One `ws_load.mjs` run (`pingpong` or `stream`) of the settings' length against `url`."""
    s = ctx.settings
    cmd = ["node", str(WS_LOAD), url, mode, str(connections), str(size), str(s.ws_seconds)]
    if mode == "stream":
        cmd.append(str(s.ws_window))
    env = {**os.environ, "BENCH_HEADERS": json.dumps(ctx.headers)}
    out = await run_command(cmd, env=env, cwd=BENCH_DIR, timeout=s.ws_seconds + 60)
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if not result["messages"]:
        raise RuntimeError(f"no message came back in {mode} mode")
    return result


class Websocket(Scenario):
    name = "websocket"
    title = "WebSocket messages"
    paths = RUN_PATHS
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("messages_per_s", "ping-pong, 8 conns x 100 B", "msg/s", True, headline=True),
        Metric("p50_ms", "ping-pong p50 round trip", "ms", False),
        Metric("p99_ms", "ping-pong p99 round trip", "ms", False),
        Metric("stream_mb_per_s", "1 MB stream, 1 conn", "MB/s", True, headline=True),
        Metric("stream_messages_per_s", "1 MB stream, 1 conn", "msg/s", True),
        Metric("stream_p50_ms", "1 MB stream p50 round trip", "ms", False),
        Metric("stream_p99_ms", "1 MB stream p99 round trip", "ms", False),
    )

    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        s = ctx.settings
        url = path.ws_url(NODE, "echo")
        small = await ws_load(ctx, url, "pingpong", s.ws_connections, s.ws_message_bytes)
        big = await ws_load(ctx, url, "stream", 1, s.ws_big_bytes)
        return {
            "messages_per_s": small["messages_per_s"],
            "p50_ms": small["p50_ms"],
            "p99_ms": small["p99_ms"],
            "stream_mb_per_s": big["mb_per_s"],
            "stream_messages_per_s": big["messages_per_s"],
            "stream_p50_ms": big["p50_ms"],
            "stream_p99_ms": big["p99_ms"],
        }
