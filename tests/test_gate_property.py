"""The gate under generated requests: without the token, nothing reaches a backend.

Hypothesis builds request lines as an attacker would (every method, percent-encodings
of any path byte, dot segments, doubled slashes, `;`, `%00`, backslashes, encoded
query names, the relay's own prefixes) and sends them, without the relay's token, to
two real relays (fast path and aiohttp only) in front of a backend that records every
head it is sent. The backend must record nothing, and every answer must be a refusal
(400, 401, 403, 404), save the relay's own health check.

`RELAY_GATE_EXAMPLES` sets how many (2,000 by default; 100,000 for a long run).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_relay import gate
from jupyter_relay.server import RunningRelay

from .conftest import start_relay
from .recorder import Recorder, run_recorder

EXAMPLES = int(os.environ.get("RELAY_GATE_EXAMPLES", "2000"))
PREFIXES = [
    "",
    "/relay",
    "/relay/healthz",
    "/relay/api/status",
    "/http_over_websocket",
    "/http_over_websocket/diagnose",
    "/http_over_websocket/proxied_ws/api/kernels",
    "/proxy",
    "/proxy/8050",
    "/proxy/absolute/8050",
    "/proxy/localhost:8050",
    "/proxy/rec:8050",
    "/apps/dash",
    "/user/alice",
    "/user/alice/api/kernels",
    "/api/kernels",
    "/api/kernels/0b6c1b6e-0c1e-4c47-9d0c-5a0d2f1c6e01/channels",
    "/api/sessions",
    "/api/kernelspecs",
    "/kernelspecs/python3/logo.svg",
    "/api/contents",
    "/lab",
    "/files",
]
TRICKS = [
    ".", "..", "", "%2e", "%2E%2e", ";", ";x=1", "%00", "%2F", "%2f", "%5C", "\\",
    "healthz", "relay", "%72elay", "%68ealthz", "relay%2Fhealthz", "..%2f", "%252F", "%",
    "%zz", "%C3", "%E2%9C%93", "@", "user@evil.example", "http:", "//evil.example",
]  # fmt: skip
# What a request line can carry as it is; anything else is sent percent-encoded.
RAW = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "?#")


@st.composite
def segment(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(TRICKS))
    text = draw(st.text(st.characters(codec="utf-8"), max_size=6))
    out = []
    for char in text:
        if char in RAW and draw(st.booleans()):
            out.append(char)
        else:
            encoded = quote(char, safe="")
            out.append(encoded.lower() if draw(st.booleans()) else encoded)
    return "".join(out) if out or not text else quote(text, safe="")


@st.composite
def query(draw: st.DrawFn) -> str:
    items = draw(
        st.lists(
            st.one_of(
                st.sampled_from(
                    [
                        "token=wrong",
                        "%74oken=wrong",
                        "t%6Fken=",
                        "token",
                        "jupyter_http_over_ws_auth_url="
                        + quote("http://127.0.0.1:1/?token=wrong", safe=""),
                        "jupyter_http_over_ws_auth_%75rl=" + quote("http://evil/?token=x"),
                        "a=%2F",
                        "=&&=",
                    ]
                ),
                segment(),
            ),
            max_size=3,
        )
    )
    return "?" + "&".join(items) if items else ""


@st.composite
def target(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(PREFIXES))
    for part in draw(st.lists(segment(), max_size=4)):
        path += draw(st.sampled_from(["/", "/", "//"])) + part
    return (path or "/") + draw(query())


@dataclass
class Engines:
    loop: asyncio.AbstractEventLoop
    recorder: Recorder
    relays: dict[str, RunningRelay]

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(60)


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    """A recorder and two relays in front of it, served by an event loop of their own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    recording = run_recorder()

    async def up() -> Engines:
        recorder = await recording.__aenter__()
        relays = {
            "engine": await start_relay(
                [recorder.backend_arg],
                allow_origin=["https://trusted.example.org"],
                log_level="error",
            )
        }
        return Engines(loop, recorder, relays)

    engines: Engines = asyncio.run_coroutine_threadsafe(up(), loop).result(120)
    try:
        yield engines
    finally:

        async def down() -> None:
            for relay in engines.relays.values():
                await relay.stop()
            await recording.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(down(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def send(port: int, request: bytes) -> tuple[int, bytes]:
    """One request on its own connection; the status and everything answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert match, (request, data[:200])
    return int(match.group(1)), data


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "MOVE"]),
    target=target(),
    upgrade=st.booleans(),
    origin=st.sampled_from([None, "https://evil.example.org", "https://trusted.example.org"]),
)
def test_no_request_without_the_token_reaches_a_backend(
    engines: Engines, method: str, target: str, upgrade: bool, origin: str | None
) -> None:
    for engine, relay in engines.relays.items():
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{relay.port}"]
        if upgrade:
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ]
        else:
            lines.append("Connection: close")
        if origin:
            lines.append(f"Origin: {origin}")
        status, answer = send(relay.port, ("\r\n".join(lines) + "\r\n\r\n").encode())
        assert engines.recorder.heads == [], (engine, target, engines.recorder.heads)
        if status in (400, 401, 403, 404):
            continue
        # Only the relay's own health check answers a stranger, with its own words.
        raw_path = target.partition("?")[0]
        assert gate.canonical_path(raw_path) == gate.HEALTH, (engine, method, target, status)
        assert method in ("GET", "HEAD") and not upgrade, (engine, method, target, status)
        assert status in (200, 503), (engine, target, answer[:300])
        assert method == "HEAD" or answer.endswith(b"ok\n"), (engine, target, answer[:300])
