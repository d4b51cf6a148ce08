"""First end-to-end checks through the in-process relay."""

from __future__ import annotations

import aiohttp

from jupyter_relay.server import RunningRelay

from .kernel_client import V1, execute


async def test_kernelspecs(relay: RunningRelay, client: aiohttp.ClientSession) -> None:
    async with client.get(relay.base_url + "api/kernelspecs") as resp:
        assert resp.status == 200
        assert "python3" in (await resp.json())["kernelspecs"]


async def test_execute_v1_and_legacy(relay: RunningRelay, client: aiohttp.ClientSession) -> None:
    async with client.post(relay.base_url + "api/kernels", json={"name": "python3"}) as resp:
        assert resp.status == 201, await resp.text()
        kernel = (await resp.json())["id"]
    try:
        for protocols in ((V1,), ()):
            url = f"{relay.base_url}api/kernels/{kernel}/channels?session_id=s1"
            async with client.ws_connect(url, protocols=protocols) as ws:
                assert ws.protocol == (protocols[0] if protocols else None)
                out, reply = await execute(ws, "print(6*7)")
                assert out == "42\n"
                assert reply["content"]["status"] == "ok"
    finally:
        async with client.delete(f"{relay.base_url}api/kernels/{kernel}") as resp:
            assert resp.status == 204
