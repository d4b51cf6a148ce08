"""A backend at a base URL, percent-encoded as pytest-jupyter's default `/a%40b/` is.

jupyter_server routes on raw paths: the relay must send `/a%40b/api/...` byte for
byte (not `/a@b/`), and answer in its own URL space (`Location: /api/contents/x`).
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from yarl import URL

from .conftest import start_relay
from .servers import JupyterServer, start_jupyter, wait_http


@pytest.fixture(scope="module", params=["/a%40b/", "/jpbase/"])
def based(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[JupyterServer, str]]:
    base: str = request.param
    root = tmp_path_factory.mktemp("based-root")
    server = start_jupyter(
        root,
        tmp_path_factory.mktemp("based"),
        extra_args=(f"--ServerApp.base_url={base}",),
        wait_ready=False,
    )
    wait_http(f"http://127.0.0.1:{server.port}{base}api/status", server.headers)
    yield server, base
    server.stop()


async def test_a_base_url_keeps_its_bytes_and_locations_are_the_relays(
    based: tuple[JupyterServer, str], client: aiohttp.ClientSession
) -> None:
    server, base = based
    arg = f"t=http://127.0.0.1:{server.port}{base}?token={server.token}"
    running = await start_relay([arg])
    try:
        url = running.base_url.rstrip("/")
        async with client.get(f"{url}/api/status") as resp:
            assert resp.status == 200, await resp.text()
        async with client.post(f"{url}/api/contents", json={"type": "file", "ext": ".txt"}) as resp:
            assert resp.status == 201, await resp.text()
            name = (await resp.json())["name"]
            assert resp.headers["Location"] == f"/api/contents/{name}"
        async with client.get(f"{url}/api/contents/{name}") as resp:
            assert resp.status == 200
        # The prefixed form (pages served by the backend use it) reaches the same file.
        async with client.get(URL(f"{url}{base}api/contents/{name}", encoded=True)) as resp:
            assert resp.status == 200
        # ...and is answered in those paths: it asked with the base, it keeps the base.
        prefixed = URL(f"{url}{base}api/contents", encoded=True)
        async with client.post(prefixed, json={"type": "directory"}) as resp:
            assert resp.status == 201, await resp.text()
            made = (await resp.json())["name"]
            assert resp.headers["Location"] == f"{base}api/contents/{made}".replace(" ", "%20")
        async with client.post(f"{url}/api/kernels", json={}) as resp:
            assert resp.status == 201, await resp.text()
            kernel = (await resp.json())["id"]
            assert resp.headers["Location"] == f"/api/kernels/{kernel}"
        async with client.ws_connect(f"{url}/api/kernels/{kernel}/channels") as ws:
            await ws.send_json(
                {
                    "header": {
                        "msg_id": "m1",
                        "msg_type": "kernel_info_request",
                        "username": "",
                        "session": "s",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {},
                    "channel": "shell",
                }
            )
            async for msg in ws:
                data = msg.json()
                if data.get("msg_type") == "kernel_info_reply":
                    break
        async with client.delete(f"{url}/api/kernels/{kernel}") as resp:
            assert resp.status == 204
    finally:
        await running.stop()


def test_backend_uri_keeps_encoded_base() -> None:
    from jupyter_relay.specs import parse_backend

    spec = parse_backend("t=http://127.0.0.1:1/a%40b/?token=x")
    assert spec.url is not None and spec.url.raw_path == "/a%40b/"
    spaced = parse_backend("t=http://127.0.0.1:1/a b/")
    assert spaced.url is not None and spaced.url.raw_path == "/a%20b/"
