"""The port proxy's targets: none made for a stranger, and never more than a bound."""

from __future__ import annotations

import aiohttp

from jupyter_relay.backends.base import Backend
from jupyter_relay.proxy.allow import Allowlist
from jupyter_relay.proxy.core import MAX_TARGETS, PortProxy

from .conftest import RELAY_TOKEN, start_relay
from .servers import JupyterServer


async def test_requests_without_the_token_make_no_target(jupyter: JupyterServer) -> None:
    running = await start_relay([f"lab={jupyter.backend_arg}"])
    try:
        async with aiohttp.ClientSession() as anon:
            for port in range(20000, 20040):
                async with anon.get(f"{running.base_url}proxy/{port}/x") as resp:
                    assert resp.status == 403
                async with anon.get(f"{running.base_url}proxy/127.0.0.{port % 250}:{port}/") as r:
                    assert r.status == 403
        assert running.relay.port_proxy.targets == {}
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"token {RELAY_TOKEN}"}) as client,
            client.get(f"{running.base_url}proxy/1/") as resp,
        ):
            assert resp.status == 502  # nothing listens on port 1; now a target exists
        assert list(running.relay.port_proxy.targets) == ["/proxy/1"]
    finally:
        await running.stop()


async def test_targets_are_bounded_and_the_oldest_dropped() -> None:
    backends: dict[str, Backend] = {}
    proxy = PortProxy(Allowlist.parse(["loopback"]), (), backends, connect_timeout=1.0)
    first = proxy.fast_target("/proxy/1/")
    assert first is not None
    for port in range(2, MAX_TARGETS + 50):
        assert proxy.fast_target(f"/proxy/{port}/") is not None
    assert len(proxy.targets) <= MAX_TARGETS
    assert "/proxy/1" not in proxy.targets
    assert proxy.fast_target("/proxy/1/") is not first  # made anew when asked again
    await proxy.close()
    assert not proxy.targets
