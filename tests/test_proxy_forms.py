"""The port proxy's URL forms over HTTP, against a real aiohttp app on loopback.

The relay runs in-process (with its fast path and without: both must agree) in front of
a backend named `lab` on 127.0.0.1; the app (tests/webapps.py) reports what reached it:
the path after the prefix is taken off, the query without the relay's token, the prefix
headers, the Host and Origin it was given, and no credential of the relay's. Redirects'
Location is rewritten into the prefix, bodies stream both ways (a request body reaches
the app before the client has finished it; server-sent events arrive as they are sent),
and the errors are the relay's JSON: 502 when nothing listens, 504 when the app is slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest

from jupyter_relay.auth import cookie_name, cookie_value

from .conftest import RELAY_TOKEN, WatchedRelay
from .echo_app import Echo, run_echo
from .proxying import (
    PREFIX_HEADERS,
    assert_json_error,
    fetch,
    proxy_relay,
    seen,
    url,
)
from .servers import free_port
from .webapps import WebApp, run_webapp

# A GET that asks for nothing in particular gets the HTML page; API clients ask for JSON.
JSON = {"Accept": "application/json"}


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
async def backend() -> AsyncIterator[Echo]:
    """The relay's Jupyter backend `lab` (on 127.0.0.1): a host name for `/proxy/lab:<port>/`."""
    async with run_echo() as echo:
        yield echo


@pytest.fixture
async def relay(backend: Echo) -> AsyncIterator[WatchedRelay]:
    async with proxy_relay([f"lab=http://127.0.0.1:{backend.port}/"]) as running:
        yield running


def prefixed(prefix: str) -> dict[str, str | None]:
    return dict.fromkeys(PREFIX_HEADERS, prefix)


NO_PREFIX: dict[str, str | None] = dict.fromkeys(PREFIX_HEADERS)


# --- 1. the four forms --------------------------------------------------------------------


async def test_relative_form_strips_the_prefix_and_says_so(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port = app.port
    cases = {
        f"/proxy/{port}/some/where?x=1&y=%E2%9C%93": ("/some/where", "x=1&y=%E2%9C%93"),
        f"/proxy/{port}/": ("/", ""),
        f"/proxy/{port}": ("/", ""),
        f"/proxy/{port}/%E2%9C%93/a%20b/?q=a+b": ("/%E2%9C%93/a%20b/", "q=a+b"),
    }
    for path, (app_path, query) in cases.items():
        got = seen(await fetch(client, "GET", url(relay.base, path)))
        assert (got.path, got.query) == (app_path, query), (path, got.raw)
        assert got.prefix_headers() == prefixed(f"/proxy/{port}"), (path, got.raw)
        assert got.header("Host") == f"localhost:{port}", (path, got.raw)


async def test_absolute_form_keeps_the_whole_path_without_prefix_headers(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port = app.port
    for path in (
        f"/proxy/absolute/{port}/some/where?x=1",
        f"/proxy/absolute/{port}/",
        f"/proxy/absolute/127.0.0.1:{port}/deep/er/?x=1",
    ):
        got = seen(await fetch(client, "GET", url(relay.base, path)))
        assert f"{got.path}?{got.query}".rstrip("?") == path, (path, got.raw)
        assert got.prefix_headers() == NO_PREFIX, (path, got.raw)
    got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/absolute/{port}")))
    assert got.path == f"/proxy/absolute/{port}", got.raw


async def test_host_forms_name_the_host_in_prefix_and_host_header(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port = app.port
    for host in ("127.0.0.1", "localhost"):
        got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/{host}:{port}/x/y?z=1")))
        assert (got.path, got.query) == ("/x/y", "z=1"), got.raw
        assert got.prefix_headers() == prefixed(f"/proxy/{host}:{port}"), got.raw
        assert got.header("Host") == f"{host}:{port}", got.raw
        # The form without a path is the app's root.
        got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/{host}:{port}")))
        assert got.path == "/", got.raw


async def test_a_backend_name_is_a_host(
    relay: WatchedRelay, app: WebApp, backend: Echo, client: aiohttp.ClientSession
) -> None:
    """`lab` is the backend at 127.0.0.1: `/proxy/lab:<port>/` is <port> on that host."""
    before = len(backend.requests)
    got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/lab:{app.port}/in/app")))
    assert got.path == "/in/app", got.raw
    assert got.prefix_headers() == prefixed(f"/proxy/lab:{app.port}"), got.raw
    assert app.paths()[-1] == "/in/app"
    assert len(backend.requests) == before  # the backend's own server saw none of it


async def test_ipv6_loopback_literal_and_fallback(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    async with run_webapp(host="::1") as app6:
        port = app6.port
        got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/[::1]:{port}/six")))
        assert got.path == "/six", got.raw
        assert got.header("Host") == f"[::1]:{port}", got.raw
        assert got.prefix_headers() == prefixed(f"/proxy/[::1]:{port}"), got.raw
        # Nothing on 127.0.0.1:<port>: the port form tries ::1 next.
        got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/{port}/six")))
        assert got.path == "/six", got.raw
        assert got.raw["peer"][0] == "::1", got.raw
        assert len(app6.requests) == 2


async def test_percent_encoded_slash_and_hash_kept_byte_for_byte(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port = app.port
    tail = "/files/a%2Fb%23c%3Fd%25e?x=%2F&y=%23&z=%26"
    got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/{port}{tail}")))
    assert f"{got.path}?{got.query}" == tail, got.raw
    got = seen(await fetch(client, "GET", url(relay.base, f"/proxy/absolute/{port}{tail}")))
    assert f"{got.path}?{got.query}" == f"/proxy/absolute/{port}{tail}", got.raw


# --- 2. what the app is told, and what it is not -----------------------------------------


async def test_the_relays_token_never_reaches_the_app(
    relay: WatchedRelay,
    app: WebApp,
    client: aiohttp.ClientSession,
    anon: aiohttp.ClientSession,
) -> None:
    port = app.port
    base = relay.base
    # In the query: taken out, the rest kept in order.
    path = f"/proxy/{port}/q?a=1&token={RELAY_TOKEN}&b=%2F&tokens=2"
    got = seen(await fetch(anon, "GET", url(base, path)))
    assert got.query == "a=1&b=%2F&tokens=2", got.raw
    # In the Authorization header: not passed on.
    got = seen(await fetch(client, "GET", url(base, f"/proxy/{port}/h")))
    assert got.header("Authorization") is None, got.raw
    # In the relay's cookie: that cookie is dropped, the app's own are kept.
    cookie = f"app_session=abc; {cookie_name(relay.running.port)}={cookie_value(RELAY_TOKEN)}"
    got = seen(await fetch(anon, "GET", url(base, f"/proxy/{port}/c"), headers={"Cookie": cookie}))
    assert got.all("Cookie") == ["app_session=abc"], got.raw
    # In the Referer of a page first opened with `?token=`: taken out there too.
    for query, kept in ((f"?tab=2&token={RELAY_TOKEN}", "?tab=2"), (f"?token={RELAY_TOKEN}", "")):
        referer = f"{base.rstrip('/')}/proxy/{port}/page{query}"
        got = seen(
            await fetch(client, "GET", url(base, f"/proxy/{port}/r"), headers={"Referer": referer})
        )
        assert got.header("Referer") == f"http://localhost:{port}/proxy/{port}/page{kept}"
    for item in app.requests:
        assert RELAY_TOKEN not in json.dumps(item), item
        assert cookie_value(RELAY_TOKEN) not in json.dumps(item), item


async def test_origin_is_rewritten_to_the_apps_origin(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    own = f"http://127.0.0.1:{relay.running.port}"
    for path, host in (
        (f"/proxy/{app.port}/o", f"localhost:{app.port}"),
        (f"/proxy/127.0.0.1:{app.port}/o", f"127.0.0.1:{app.port}"),
    ):
        got = seen(
            await fetch(client, "POST", url(relay.base, path), headers={"Origin": own}, data=b"x")
        )
        assert got.header("Host") == host, got.raw
        assert got.header("Origin") == f"http://{host}", got.raw


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_and_bodies_reach_the_app(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession, method: str
) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    got = seen(await fetch(client, method, url(relay.base, f"/proxy/{app.port}/m"), data=body))
    assert got.method == method, got.raw
    assert got.size == len(body), got.raw
    assert got.raw["sha256"] == hashlib.sha256(body).hexdigest()


async def test_head_has_no_body(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    got = await fetch(client, "HEAD", url(relay.base, f"/proxy/{app.port}/head"))
    assert got.status == 200 and got.text == "", (got.status, got.text[:200])
    assert app.requests[-1]["method"] == "HEAD"


# --- 3. streaming -------------------------------------------------------------------------


async def test_request_body_reaches_the_app_before_the_client_finishes(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    """The client sends its second half only once the app has the first: no buffering."""
    first = os.urandom(64 * 1024)
    rest = os.urandom(256 * 1024)
    waited: list[float] = []

    async def body() -> AsyncIterator[bytes]:
        yield first
        started = time.monotonic()
        await asyncio.wait_for(app.first_chunk.wait(), 10)
        waited.append(time.monotonic() - started)
        yield rest

    got = seen(
        await fetch(client, "POST", url(relay.base, f"/proxy/{app.port}/_upload"), data=body())
    )
    assert got.size == len(first) + len(rest), got.raw
    assert got.raw["sha256"] == hashlib.sha256(first + rest).hexdigest()
    assert waited, "the body was never asked for its second part"


async def test_server_sent_events_arrive_as_they_are_sent(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    count, gap = 5, 0.3
    arrived: list[tuple[float, dict[str, float]]] = []
    target = url(relay.base, f"/proxy/{app.port}/_sse?n={count}&gap={gap}")
    # An ordinary Accept: the relay streams whatever the content type asks for.
    async with asyncio.timeout(30), client.get(target, headers={"Accept": "*/*"}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for line in resp.content:
            if line.startswith(b"data: "):
                arrived.append((time.time(), json.loads(line[6:])))
    assert [event["i"] for _, event in arrived] == list(range(count))
    sent = app.sse_sent
    assert len(sent) == count
    # The first event was in the client's hands long before the last was even sent...
    assert arrived[0][0] < sent[-1] - 2 * gap, (arrived, sent)
    # ...and each arrived before the event after it was sent (gap 0.3 s; generous bound).
    for index in range(count - 1):
        assert arrived[index][0] < sent[index + 1] + 0.25, (index, arrived, sent)


# --- 4. redirects -------------------------------------------------------------------------


async def redirect_location(
    client: aiohttp.ClientSession, base: str, prefix: str, location: str, status: int = 302
) -> str | None:
    path = f"{prefix}/_redirect?status={status}&location={quote(location, safe='')}"
    got = await fetch(client, "GET", url(base, path))
    assert got.status == status, (got.status, got.text[:300])
    return got.location


async def test_redirects_stay_inside_the_prefix(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port, base = app.port, relay.base
    rel = f"/proxy/{port}"
    cases = [
        (rel, "/target", f"{rel}/target"),
        (rel, "/", f"{rel}/"),
        (rel, "/a%2Fb?x=%2F&y=1", f"{rel}/a%2Fb?x=%2F&y=1"),
        (rel, f"http://localhost:{port}/own?y=1", f"{rel}/own?y=1"),
        (rel, "next/page", "next/page"),
        # An app that knows its prefix (X-Forwarded-Prefix) wrote it already: not twice.
        (rel, f"{rel}/already", f"{rel}/already"),
        (rel, f"{rel}?q=1", f"{rel}?q=1"),
        (rel, f"http://localhost:{port}{rel}/own", f"{rel}/own"),
        (rel, f"{rel}0/other", f"{rel}{rel}0/other"),  # /proxy/80500 is not under /proxy/8050
        (rel, "http://example.org/elsewhere", "http://example.org/elsewhere"),
        (f"/proxy/127.0.0.1:{port}", "/t", f"/proxy/127.0.0.1:{port}/t"),
        (f"/proxy/127.0.0.1:{port}", f"http://127.0.0.1:{port}/t", f"/proxy/127.0.0.1:{port}/t"),
        # Absolute mode: the app knows its full path; own-origin URLs become paths.
        (f"/proxy/absolute/{port}", f"/proxy/absolute/{port}/t", f"/proxy/absolute/{port}/t"),
        (f"/proxy/absolute/{port}", "/elsewhere", "/elsewhere"),
        (
            f"/proxy/absolute/{port}",
            f"http://localhost:{port}/proxy/absolute/{port}/t",
            f"/proxy/absolute/{port}/t",
        ),
    ]
    wrong = []
    for prefix, location, expected in cases:
        got = await redirect_location(client, base, prefix, location)
        if got != expected:
            wrong.append((prefix, location, got, expected))
    assert not wrong, wrong
    for status in (301, 303, 307, 308):
        assert await redirect_location(client, base, rel, "/s", status) == f"{rel}/s"


async def test_an_apps_cookies_stay_under_its_prefix_and_never_replace_the_relays(
    relay: WatchedRelay, app: WebApp, client: aiohttp.ClientSession
) -> None:
    port, base = app.port, relay.base
    own = cookie_name(relay.running.port)
    sets = ["app=1; Path=/; HttpOnly", "deep=2; Path=/dash/", f"{own}=forged; Path=/"]
    query = "&".join(f"set={quote(v, safe='')}" for v in sets)
    rel, absolute = f"/proxy/{port}", f"/proxy/absolute/{port}"
    for prefix, expected in (
        (rel, [f"app=1; Path={rel}/; HttpOnly", f"deep=2; Path={rel}/dash/"]),
        # An absolute app's /dash/ is outside its prefix: narrowed to the prefix.
        (absolute, [f"app=1; Path={absolute}/; HttpOnly", f"deep=2; Path={absolute}/"]),
    ):
        got = await fetch(client, "GET", url(base, f"{prefix}/_cookie?{query}"))
        assert got.status == 200, got.text
        assert got.headers.getall("Set-Cookie", []) == expected, prefix
    # A Jupyter backend's cookies keep Path=/ (its pages live at the relay's root).
    got = await fetch(client, "GET", url(base, "/cookie"))
    assert got.headers.getall("Set-Cookie", []) == ["a=1; Path=/", "b=2; Path=/"], got.headers


# --- 5. errors ----------------------------------------------------------------------------


async def test_nothing_listening_is_a_502(
    relay: WatchedRelay, client: aiohttp.ClientSession
) -> None:
    port = free_port()
    got = await fetch(client, "GET", url(relay.base, f"/proxy/{port}/x"), headers=JSON)
    assert_json_error(got, 502, rf"\b{port}\b")
    assert got.seconds < 10, got.seconds
    page = await fetch(
        client, "GET", url(relay.base, f"/proxy/{port}/x"), headers={"Accept": "text/html"}
    )
    assert page.status == 502 and page.content_type == "text/html", (page.status, page.headers)
    assert str(port) in page.text


async def test_a_slow_app_is_a_504(
    backend: Echo, app: WebApp, client: aiohttp.ClientSession
) -> None:
    async with proxy_relay([f"lab=http://127.0.0.1:{backend.port}/"], backend_timeout="1") as relay:
        target = url(relay.base, f"/proxy/{app.port}/_slow?s=6")
        got = await fetch(client, "GET", target, headers=JSON)
        assert_json_error(got, 504)
        assert 0.9 < got.seconds < 5, got.seconds
