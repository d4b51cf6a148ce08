"""`/relay/metrics`: a real relay over a real Jupyter, scraped and parsed as Prometheus would.

Requests of several roads (the primary, the house, a kernel's websocket, the port
proxy refusing) go through the relay; the scrape is read with prometheus_client's
own parser, and each count is checked by its labels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_relay.server import RunningRelay

from .conftest import start_relay
from .kernel_client import run_code, start_kernel
from .servers import JupyterServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    """Every sample of one scrape, by name and labels."""
    async with session.get(base + "relay/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200, (resp.status, text)
        assert resp.headers["Content-Type"].startswith("text/plain; version="), resp.headers
        assert resp.headers["Cache-Control"] == "no-store"
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until(session: aiohttp.ClientSession, base: str, name: str, want: float, **labels: str):
    """Scrape until the sample has the value wanted (a websocket's close is counted once the
    relay has seen it); fail with what was seen after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(session, base)
        if value(samples, name, **labels) == want or time.monotonic() > deadline:
            assert value(samples, name, **labels) == want, (name, labels, samples)
            return samples
        await asyncio.sleep(0.05)


@pytest.fixture
async def metered(jupyter: JupyterServer) -> AsyncIterator[RunningRelay]:
    running = await start_relay([f"lab={jupyter.backend_arg}"], proxy_deny_port=["22"])
    yield running
    await running.stop()


async def test_requests_are_counted_by_road_backend_and_status_class(
    metered: RunningRelay, client: aiohttp.ClientSession
) -> None:
    base = metered.base_url
    for _ in range(2):
        async with client.get(base + "api/contents") as resp:
            assert resp.status == 200
    async with client.get(base + "api/contents/no-such-file") as resp:
        assert resp.status == 404
    # The port proxy refuses: a denied port, a host the allowlist lacks, no /proxy/ form.
    for path, status in (("proxy/22/", 403), ("proxy/10.1.2.3:80/", 403), ("proxy/x@y/", 404)):
        async with client.get(base + path) as resp:
            assert resp.status == status, (path, await resp.text())

    samples = await scrape(client, base)
    requests = "jupyter_relay_requests_total"
    assert value(samples, requests, road="primary", backend="lab", status_class="2xx") == 2
    assert value(samples, requests, road="primary", backend="lab", status_class="4xx") == 1
    # Refused before any target was made: no backend.
    assert value(samples, requests, road="port", backend="-", status_class="4xx") == 3
    denials = "jupyter_relay_port_proxy_denials_total"
    for reason in ("port", "host", "form"):
        assert value(samples, denials, reason=reason) == 1, (reason, samples)
    # The backend answered every request in time: each is in its latency histogram.
    latency = "jupyter_relay_upstream_latency_seconds"
    assert value(samples, latency + "_count", backend="lab") == 3
    assert value(samples, latency + "_bucket", backend="lab", le="+Inf") == 3
    assert 0 < (value(samples, latency + "_sum", backend="lab") or 0) < 30
    assert value(samples, "jupyter_relay_backend_up", backend="lab", kind="jupyter") == 1
    # A jupyter backend neither reconnects over SSH nor starts on a hub.
    assert not [k for k in samples if k[0].startswith(("jupyter_relay_ssh", "jupyter_relay_hub"))]

    # The scrape itself was the house's: counted by the next one.
    samples = await scrape(client, base)
    assert value(samples, requests, road="house", backend="relay", status_class="2xx") == 1


async def test_a_kernel_websocket_is_counted_open_then_closed(
    metered: RunningRelay, client: aiohttp.ClientSession
) -> None:
    base = metered.base_url
    kernel = await start_kernel(client, base)  # the mixer's: the house
    try:
        url = f"{base}api/kernels/{kernel}/channels"
        async with client.ws_connect(url) as ws:
            assert not ws.closed
            samples = await until(client, base, "jupyter_relay_websockets_open", 1, backend="lab")
        await until(client, base, "jupyter_relay_websockets_open", 0, backend="lab")
        assert await run_code(client, base, kernel, "print(6 * 7)") == "42"
        samples = await until(
            client,
            base,
            "jupyter_relay_requests_total",
            2,
            road="kernel",
            backend="lab",
            status_class="1xx",
        )
        house = value(
            samples,
            "jupyter_relay_requests_total",
            road="house",
            backend="relay",
            status_class="2xx",
        )
        assert house is not None and house >= 2  # the kernel's start, and scrapes
    finally:
        async with client.delete(f"{base}api/kernels/{kernel}") as resp:
            assert resp.status == 204


async def test_metrics_need_the_token(metered: RunningRelay, anon: aiohttp.ClientSession) -> None:
    async with anon.get(metered.base_url + "relay/metrics") as resp:
        body = await resp.text()
        assert resp.status == 403, body
        assert "needs its token" in body
        assert "jupyter_relay_" not in body


async def test_metrics_public_opens_them_to_a_scraper_without_the_token(
    jupyter: JupyterServer, anon: aiohttp.ClientSession
) -> None:
    running = await start_relay([f"lab={jupyter.backend_arg}"], metrics_public=True)
    try:
        base = running.base_url
        samples = await scrape(anon, base)
        assert value(samples, "jupyter_relay_backend_up", backend="lab", kind="jupyter") == 1
        async with anon.head(base + "relay/metrics") as resp:
            assert resp.status == 200
        # Only GET and HEAD of that one path: the rest still needs the token.
        for method, path in (("POST", "relay/metrics"), ("GET", "relay/api/status")):
            async with anon.request(method, base + path) as resp:
                assert resp.status == 403, (method, path)
        # No token or secret in what it shows.
        async with anon.get(base + "relay/metrics") as resp:
            text = await resp.text()
        assert jupyter.token not in text
        assert running.relay.config.token is not None
        assert running.relay.config.token.value not in text
    finally:
        await running.stop()
