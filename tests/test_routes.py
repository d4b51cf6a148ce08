"""The URL space, one table: each path's road, and aiohttp reading the same rows."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import assume, given
from hypothesis import strategies as st

from jupyter_relay.routes import TABLE, Road, classify, house_rows

KERNEL = "0f4a6c3e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("path", "road", "handler"),
    [
        ("/relay/healthz", Road.HOUSE, "healthz"),
        ("/relay/api/status", Road.HOUSE, "status"),
        ("/relay", Road.HOUSE, "relay_redirect"),
        ("/relay/", Road.HOUSE, "status_page"),
        ("/relay/static/status.js", Road.HOUSE, "status_static"),
        ("/relay/anything/else", Road.HOUSE, "relay_not_found"),
        ("/relayx", Road.PRIMARY, ""),
        ("/api/kernelspecs", Road.HOUSE, "specs"),
        ("/api/kernelspecs/b--python3", Road.HOUSE, "spec"),
        ("/kernelspecs/b--python3/logo-64x64.png", Road.KERNELSPEC_FILE, ""),
        ("/api/kernels", Road.HOUSE, "kernels"),
        (f"/api/kernels/{KERNEL}", Road.HOUSE, "kernel"),
        (f"/api/kernels/{KERNEL}/channels", Road.KERNEL, ""),
        (f"/api/kernels/{KERNEL}/restart", Road.HOUSE, "kernel_action"),
        (f"/api/kernels/{KERNEL}/interrupt", Road.HOUSE, "kernel_action"),
        (f"/api/kernels/{KERNEL}/other", Road.PRIMARY, ""),
        ("/api/sessions", Road.HOUSE, "sessions"),
        ("/api/sessions/abc", Road.HOUSE, "session"),
        ("/api/contents/x.ipynb", Road.PRIMARY, ""),
        ("/http_over_websocket", Road.HOUSE, "http_over_websocket"),
        ("/http_over_websocket/diagnose", Road.HOUSE, "diagnose"),
        ("/http_over_websocket/proxied_ws/api/x", Road.HOUSE, "proxied_ws"),
        ("/proxy", Road.PORT, ""),
        ("/proxy/8050/", Road.PORT, ""),
        ("/apps/tb/", Road.APP, ""),
        ("/lab", Road.PRIMARY, ""),
        ("/", Road.HOME, ""),
    ],
)
def test_each_path_has_its_road(path: str, road: Road, handler: str) -> None:
    match = classify(path)
    assert (match.road, match.row.handler) == (road, handler)


def test_the_kernel_id_is_read_from_the_path() -> None:
    assert classify(f"/api/kernels/{KERNEL}/channels").params["kernel_id"] == KERNEL


SEGMENTS = [
    "relay", "static", "api", "kernels", "kernelspecs", "sessions", "channels", "restart",
    "http_over_websocket", "diagnose", "proxied_ws", "proxy", "apps", KERNEL, "x", "",
]  # fmt: skip


@given(st.lists(st.sampled_from(SEGMENTS), max_size=5))
def test_aiohttp_serves_exactly_the_house_rows(segments: list[str]) -> None:
    """The engine's reading of the table and aiohttp's agree: a path the engine sends to
    the house has a route there, and one it forwards has none."""
    path = "/" + "/".join(segments)
    assume(not path.startswith("//"))  # no request target: the engine refuses those (400)
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        raise AssertionError("not called")

    for row in house_rows():
        app.router.add_route("*", row.template, handler)

    async def resolve() -> bool:
        match = await app.router.resolve(make_mocked_request("GET", path))
        return match.http_exception is None

    assert asyncio.run(resolve()) is (classify(path).road is Road.HOUSE), path


def test_every_row_names_a_handler_exactly_when_the_house_serves_it() -> None:
    for row in TABLE:
        assert bool(row.handler) is (row.road is Road.HOUSE), row
