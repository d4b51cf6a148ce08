"""The port proxy's refusals, one test per jupyter-server-proxy advisory and per rule.

Whatever must not be contacted is a `CountingListener` (a TCP port on 127.0.0.1 and ::1
that counts accepted connections), and every test ends with a control request that the
same listener does see, so a zero count means "refused", not "listener broken".

- CVE-2024-28179: jupyter-server-proxy's websockets skipped authentication. Here every
  method and the upgrade, on every form, without a token or with a wrong one: 401/403.
- CVE-2024-35225: its 403 page echoed the host unescaped. Here the error pages (404,
  403, 502) escape what they echo and say `nosniff`.
- GHSA-gcv9-6737-pjqw: `/proxy/8888@evil.com/` made it fetch http://localhost:8888@evil.com.
  Here a path after the port that does not start with `/` is a 404, nothing contacted.
- Hosts outside the allowlist, denied ports, numeric IPv4 spellings, schemes, userinfo
  and percent-encoded separators: 403/404, nothing contacted.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from jupyter_relay.auth import cookie_name, cookie_value

from .conftest import RELAY_TOKEN, WatchedRelay
from .echo_app import Echo, run_echo
from .proxying import (
    AUTH,
    Got,
    assert_json_error,
    fetch,
    proxy_relay,
    raw_request,
    relay_toml,
    url,
    webapp_command,
)
from .servers import free_port
from .waiting import eventually
from .webapps import CountingListener

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
JSON = {"Accept": "application/json"}
# Refused before anything is dialled: 404 for no port-proxy form, 400 for a path the gate
# cannot read in one way (an encoded slash, %00).
REFUSED = (400, 404)
HTML = {"Accept": "text/html,application/xhtml+xml"}
OWN_TAGS = ("<!doctype html>", '<meta charset="utf-8">')
PAGE_TAGS = {"!doctype", "html", "head", "meta", "title", "body", "h1", "p", "small", "code", "pre"}


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


@pytest.fixture
def listener2() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


@pytest.fixture
async def backend() -> AsyncIterator[Echo]:
    async with run_echo() as echo:
        yield echo


def lab(backend: Echo) -> list[str]:
    return [f"lab=http://127.0.0.1:{backend.port}/"]


@pytest.fixture
async def relay(backend: Echo) -> AsyncIterator[WatchedRelay]:
    async with proxy_relay(lab(backend)) as running:
        yield running


async def control(
    client: aiohttp.ClientSession, relay: WatchedRelay, path: str, listener: CountingListener
) -> None:
    """The same listener, reached the allowed way: it counts, and the relay says 502."""
    before = listener.count
    got = await fetch(client, "GET", url(relay.base, path), headers=JSON)
    assert got.status == 502, (path, got.status, got.text[:300])
    await eventually(lambda: listener.count > before, timeout=10, what=f"{path} reaches {listener}")


def assert_safe_page(got: Got, status: int) -> None:
    """An HTML error page that cannot run script: escaped, text/html, nosniff."""
    assert got.status == status, (got.status, got.text[:500])
    assert got.content_type == "text/html", (got.headers, got.text[:500])
    assert got.headers.get("X-Content-Type-Options") == "nosniff", got.headers
    # Every tag is the page's own: plain text markup, no attribute but the charset.
    for tag in re.findall(r"<[^>]*>?", got.text):
        name = re.match(r"</?([!A-Za-z][A-Za-z0-9]*)", tag)
        assert name is not None and name.group(1).lower() in PAGE_TAGS, (tag, got.text)
        assert tag.lower() in OWN_TAGS or " " not in tag.strip("<>"), (
            tag,
            got.text,
        )


# --- CVE-2024-28179 -------------------------------------------------------------------------


async def test_cve_2024_28179_no_token_no_contact(
    backend: Echo,
    listener: CountingListener,
    tmp_path: Path,
    client: aiohttp.ClientSession,
    anon: aiohttp.ClientSession,
) -> None:
    marker = tmp_path / "app-started"
    command = f"touch {marker} && exec {' '.join(webapp_command())}"
    toml = relay_toml(watched={"command": ["sh", "-c", command], "timeout": 20})
    port = listener.port
    paths = [
        f"/proxy/{port}/x",
        f"/proxy/{port}",
        f"/proxy/absolute/{port}/x",
        f"/proxy/127.0.0.1:{port}/x",
        f"/proxy/localhost:{port}/",
        f"/proxy/[::1]:{port}/",
        f"/proxy/lab:{port}/",
        f"/proxy/absolute/127.0.0.1:{port}/x",
        "/apps/watched/",
        "/apps/watched/x?y=1",
    ]
    wrong = [
        {},
        {"Authorization": "token wrong-token"},
        {"Authorization": f"Basic {RELAY_TOKEN}"},
        {"Cookie": f"jupyter-relay-1={RELAY_TOKEN}"},
    ]
    let_through = []
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        # The relay's real cookie name, with what a forger could put in it: the token
        # itself (the cookie holds an HMAC of it), another token's HMAC, nothing.
        own = cookie_name(relay.running.port)
        wrong += [
            {"Cookie": f"{own}={RELAY_TOKEN}"},
            {"Cookie": f"{own}={cookie_value('not-the-token')}"},
            {"Cookie": f"{own}="},
            {"Cookie": f"{own}={cookie_value(RELAY_TOKEN)[:-1]}"},
        ]
        for path in paths:
            for headers in wrong:
                for method in METHODS:
                    got = await fetch(anon, method, url(relay.base, path), headers=headers)
                    if got.status not in (401, 403):
                        let_through.append((method, path, headers, got.status))
                joined = f"{path}{'&' if '?' in path else '?'}token=wrong"
                got = await fetch(anon, "GET", url(relay.base, joined))
                if got.status not in (401, 403):
                    let_through.append(("GET ?token=wrong", path, headers, got.status))
                # The websocket upgrade, which jupyter-server-proxy let through.
                try:
                    async with anon.ws_connect(url(relay.base, path), headers=headers):
                        let_through.append(("websocket", path, headers, 101))
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status not in (401, 403):
                        let_through.append(("websocket", path, headers, exc.status))
        assert not let_through, let_through
        assert await listener.settled() == 0, listener
        # Control: that cookie name with the right value is a login (the cases above
        # were refused for their value, not for a name the relay never reads).
        good = {"Cookie": f"{own}={cookie_value(RELAY_TOKEN)}"}
        got = await fetch(anon, "GET", url(relay.base, "/relay/api/status"), headers=good)
        assert got.status == 200, (got.status, got.text[:300])
        assert not marker.exists(), "the app was started for a request without the token"
        status = await fetch(client, "GET", url(relay.base, "/relay/api/status"))
        apps = {a["name"]: a for a in status.json["apps"]}
        assert apps["watched"]["state"] == "stopped" and apps["watched"]["pid"] is None, apps

        # With the token: the listener is reached, and the app starts.
        await control(client, relay, f"/proxy/{port}/x", listener)
        got = await fetch(client, "GET", url(relay.base, "/apps/watched/x"))
        assert got.status == 200 and got.json["path"] == "/x", (got.status, got.text[:300])
        assert marker.exists()


# --- CVE-2024-35225 -------------------------------------------------------------------------


async def test_cve_2024_35225_error_pages_escape_what_they_echo(
    backend: Echo,
    listener: CountingListener,
    client: aiohttp.ClientSession,
) -> None:
    port = listener.port
    script = "<script>alert(1)</script>"
    encoded = "%3Cscript%3Ealert(1)%3C/script%3E"
    attr = "%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E"
    async with proxy_relay(lab(backend), proxy_allow=["::1"], proxy_deny_port=["1-1023"]) as relay:
        base = relay.base
        pages = [
            # Malformed hosts: 404.
            (f"/proxy/{encoded}:80/", 404),
            (f"/proxy/absolute/{encoded}:{port}/", 404),
            (f"/proxy/{port}{attr}/", 404),
            (f"/apps/{encoded}/", 404),
            # A host outside the allowlist (only ::1 here), with markup after it: 403.
            (f"/proxy/127.0.0.1:{port}/{encoded}?q={attr}", 403),
            (f"/proxy/localhost:{port}/{attr}", 403),
            # A denied port: 403.
            (f"/proxy/[::1]:80/{encoded}", 403),
            # Nothing listening: 502.
            (f"/proxy/[::1]:{free_port()}/{encoded}?{attr}", 502),
        ]
        for path, status in pages:
            got = await fetch(client, "GET", url(base, path), headers=HTML)
            assert_safe_page(got, status)
        # The 403 names the host and says what to do, in the page and in the JSON.
        page = await fetch(client, "GET", url(base, f"/proxy/127.0.0.1:{port}/"), headers=HTML)
        assert "127.0.0.1" in page.text and "--proxy-allow" in page.text, page.text
        got = await fetch(client, "GET", url(base, f"/proxy/127.0.0.1:{port}/"), headers=JSON)
        assert_json_error(got, 403, r"\b127\.0\.0\.1\b", "--proxy-allow")

        # Raw `<`, `>` and `"` on the request line, as a hand-made client may send them.
        for path, expected in (
            (f"/proxy/{script}:80/", 404),
            (f"/proxy/127.0.0.1:{port}/{script}", 403),
        ):
            head = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{relay.running.port}\r\n"
                f"Authorization: token {RELAY_TOKEN}\r\nAccept: text/html\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            status, head_bytes, body = await raw_request(relay.running.port, head)
            assert status == expected, (path, status, body[:300])
            assert b"<script" not in body.lower(), (path, body)
            assert b"text/html" in head_bytes.lower(), head_bytes
            assert b"x-content-type-options: nosniff" in head_bytes.lower(), head_bytes

        assert await listener.settled() == 0, listener
        await control(client, relay, f"/proxy/[::1]:{port}/", listener)


# --- GHSA-gcv9-6737-pjqw ----------------------------------------------------------------


async def test_ghsa_gcv9_6737_pjqw_path_after_the_port_must_start_with_a_slash(
    relay: WatchedRelay,
    listener: CountingListener,
    listener2: CountingListener,
    client: aiohttp.ClientSession,
) -> None:
    one, two = listener.port, listener2.port
    paths = [
        f"/proxy/{one}@127.0.0.1:{two}/",
        f"/proxy/{one}@127.0.0.1:{two}",
        f"/proxy/{one}@localhost:{two}/x",
        f"/proxy/absolute/{one}@127.0.0.1:{two}/",
        f"/proxy/127.0.0.1:{one}@127.0.0.1:{two}/",
        f"/proxy/{one}%40127.0.0.1:{two}/",
        f"/proxy/{one}%2F@127.0.0.1:{two}/",
        f"/proxy/{one}%2f..%2f@127.0.0.1:{two}/",
        f"/proxy/{one}%23@127.0.0.1:{two}/",
        f"/proxy/{one}%3F@127.0.0.1:{two}/",
        f"/proxy/{one}%5C@127.0.0.1:{two}/",
        f"/proxy/{one}x/",
        f"/proxy/{one}.{two}/",
        f"/proxy/{one}:{two}/",
        f"/proxy/127.0.0.1:{one}x/",
        f"/proxy/127.0.0.1:{one}:{two}/",
        f"/proxy/{one}%2F",
        f"/proxy/{one}%2Fx",
    ]
    not_404 = []
    for path in paths:
        for method in ("GET", "POST"):
            got = await fetch(client, method, url(relay.base, path), headers=JSON)
            if got.status not in REFUSED:
                not_404.append((method, path, got.status, got.text[:200]))
        try:
            async with client.ws_connect(url(relay.base, path)):
                not_404.append(("websocket", path, 101, ""))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status not in REFUSED:
                not_404.append(("websocket", path, exc.status, ""))
    assert not not_404, not_404
    assert await listener.settled() == 0, listener
    assert await listener2.settled(0) == 0, listener2
    await control(client, relay, f"/proxy/{one}/", listener)
    await control(client, relay, f"/proxy/127.0.0.1:{two}", listener2)


# --- schemes, userinfo, encodings, ports ----------------------------------------------------


async def test_scheme_userinfo_and_encoding_tricks_are_404(
    relay: WatchedRelay, listener: CountingListener, client: aiohttp.ClientSession
) -> None:
    port = listener.port
    paths = [
        f"/proxy/http://127.0.0.1:{port}/",
        f"/proxy/http:%2F%2F127.0.0.1:{port}/",
        f"/proxy/absolute/http://127.0.0.1:{port}/",
        f"/proxy/localhost%2F@127.0.0.1:{port}/",
        f"/proxy/user@127.0.0.1:{port}/",
        f"/proxy/user:pw@127.0.0.1:{port}/",
        f"/proxy/127.0.0.1%3A{port}/",
        f"/proxy/%31%32%37.0.0.1:{port}/",
        f"/proxy/127.0.0.1%00:{port}/",
        f"/proxy/[::1%25lo]:{port}/",
        f"/proxy/[::1:{port}/",
        f"/proxy/::1:{port}/",
        f"/proxy/127.0.0.1:0{port}/",
        f"/proxy/0{port}/",
        f"/proxy/+{port}/",
        "/proxy/0/",
        "/proxy/65536/",
        f"/proxy/{port}0000/",
        "/proxy/127.0.0.1:0/",
        "/proxy/127.0.0.1:65536/",
        "/proxy/127.0.0.1:/",
        "/proxy/:80/",
        "/proxy//80/",
        f"/proxy/.:{port}/",
        f"/proxy/-x:{port}/",
        f"/proxy/a..b:{port}/",
    ]
    not_404 = []
    for path in paths:
        got = await fetch(client, "GET", url(relay.base, path), headers=JSON)
        if got.status not in REFUSED:
            not_404.append((path, got.status, got.text[:200]))
    assert not not_404, not_404
    assert await listener.settled() == 0, listener
    await control(client, relay, f"/proxy/127.0.0.1:{port}/", listener)


async def test_hosts_outside_the_allowlist_are_403_and_not_contacted(
    backend: Echo,
    listener: CountingListener,
    client: aiohttp.ClientSession,
) -> None:
    """Only ::1 allowed: 127.0.0.1 in any spelling, and names resolving to it, are refused."""
    port = listener.port
    async with proxy_relay(lab(backend), proxy_allow=["::1"]) as relay:
        refused = [
            f"/proxy/127.0.0.1:{port}/",
            f"/proxy/absolute/127.0.0.1:{port}/x",
            f"/proxy/localhost:{port}/",
            # `lab` is a backend on 127.0.0.1: its host is checked like any other.
            f"/proxy/lab:{port}/",
        ]
        for path in refused:
            got = await fetch(client, "GET", url(relay.base, path), headers=JSON)
            host = re.match(r"/proxy/(?:absolute/)?([^:/]+):", path)
            assert host is not None
            named = r"\b(lab|127\.0\.0\.1)\b" if host.group(1) == "lab" else host.group(1)
            assert_json_error(got, 403, "--proxy-allow", named)
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                async with client.ws_connect(url(relay.base, path)):
                    pass
            assert caught.value.status == 403, (path, caught.value)
        # What libc would read as 127.0.0.1 is not taken for a name.
        for spelled in ("127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.0.0.01"):
            got = await fetch(client, "GET", url(relay.base, f"/proxy/{spelled}:{port}/"))
            assert got.status in (403, 404), (spelled, got.status, got.text[:300])
        assert await listener.settled() == 0, listener
        await control(client, relay, f"/proxy/[::1]:{port}/", listener)

    # The default (loopback): other addresses are refused before any connection.
    async with proxy_relay(lab(backend)) as relay:
        for address in ("10.9.8.7", "169.254.169.254", "192.0.2.1", "[2001:db8::1]"):
            target = url(relay.base, f"/proxy/{address}:80/")
            got = await fetch(client, "GET", target, headers=JSON)
            assert_json_error(got, 403, re.escape(address.strip("[]")), "--proxy-allow")
            assert got.seconds < 2, (address, got.seconds)


async def test_metadata_and_link_local_literals_are_403_even_in_a_wide_range(
    backend: Echo, client: aiohttp.ClientSession
) -> None:
    async with proxy_relay(
        lab(backend), proxy_allow=["0.0.0.0/0", "::/0"], connect_timeout="1"
    ) as relay:
        for address, says in (
            ("169.254.169.254", ["metadata", r"--proxy-allow 169\.254\.169\.254"]),
            ("[fd00:ec2::254]", ["metadata", "--proxy-allow fd00:ec2::254"]),
            ("100.100.100.200", ["metadata", r"--proxy-allow 100\.100\.100\.200"]),
            ("100.64.3.4", [r"100\.64\.0\.0/10"]),
            ("169.254.3.4", ["link-local", r"169\.254\.0\.0/16"]),
            ("[fe80::1]", ["link-local", "fe80::/10"]),
        ):
            target = url(relay.base, f"/proxy/{address}:80/")
            got = await fetch(client, "GET", target, headers=JSON)
            assert_json_error(got, 403, re.escape(address.strip("[]")), *says)
            assert got.seconds < 2, (address, got.seconds)
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                async with client.ws_connect(url(relay.base, f"/proxy/{address}:80/_ws")):
                    pass
            assert caught.value.status == 403, (address, caught.value)
    # Listed by its own entry, it is dialled: whatever answers (nothing: 502/504; a
    # sandbox's egress filter: its own page), it is not the relay's refusal.
    async with proxy_relay(
        lab(backend), proxy_allow=["169.254.169.254"], connect_timeout="1"
    ) as relay:
        got = await fetch(
            client, "GET", url(relay.base, "/proxy/169.254.169.254:80/"), headers=JSON
        )
        assert "may not reach" not in got.text, (got.status, got.text)


async def test_denied_ports_are_403_and_not_contacted(
    backend: Echo,
    listener: CountingListener,
    listener2: CountingListener,
    client: aiohttp.ClientSession,
) -> None:
    one, two = listener.port, listener2.port
    denied = [str(one), f"{two - 1}-{two + 1}"]
    async with proxy_relay(lab(backend), proxy_deny_port=denied) as relay:
        for path in (
            f"/proxy/{one}/",
            f"/proxy/absolute/{one}/x",
            f"/proxy/127.0.0.1:{two}/",
            f"/proxy/[::1]:{two}/x",
            f"/proxy/lab:{two}/x",
        ):
            got = await fetch(client, "GET", url(relay.base, path), headers=JSON)
            assert_json_error(got, 403, rf"\b({one}|{two})\b")
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                async with client.ws_connect(url(relay.base, path)):
                    pass
            assert caught.value.status == 403, (path, caught.value)
        assert await listener.settled() == 0, listener
        assert await listener2.settled(0) == 0, listener2
    # Without the deny list the same ports are reached.
    async with proxy_relay(lab(backend)) as relay:
        await control(client, relay, f"/proxy/{one}/", listener)
        await control(client, relay, f"/proxy/127.0.0.1:{two}/", listener2)


# --- the status page ------------------------------------------------------------------------


def port_ranges(items: list[object]) -> set[tuple[int, int]]:
    """Deny-list entries as the status shows them (22, "6000-6010" or [6000, 6010])."""
    out = set()
    for item in items:
        if isinstance(item, int):
            out.add((item, item))
        elif isinstance(item, str):
            low, _, high = item.partition("-")
            out.add((int(low), int(high or low)))
        elif isinstance(item, list) and len(item) == 2:
            out.add((int(item[0]), int(item[1])))
        else:
            raise AssertionError(f"unexpected deny_ports entry {item!r}")
    return out


async def test_status_shows_the_rules_from_flags_file_and_default(
    backend: Echo, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    async def rules(relay: WatchedRelay) -> dict[str, list[object]]:
        got = await fetch(client, "GET", url(relay.base, "/relay/api/status"), headers=AUTH)
        assert got.status == 200, got.text
        value: dict[str, list[object]] = got.json["port_proxy"]
        return value

    async with proxy_relay(lab(backend)) as relay:
        shown = await rules(relay)
        assert shown["allow"] == ["loopback"] and shown["deny_ports"] == [], shown
    toml = relay_toml(
        {"proxy_allow": ["loopback", "*.example.org", "10.0.0.0/8"], "proxy_deny_ports": [22]}
    )
    async with proxy_relay(lab(backend), toml=toml, workdir=tmp_path) as relay:
        shown = await rules(relay)
        assert shown["allow"] == ["loopback", "*.example.org", "10.0.0.0/8"], shown
        assert port_ranges(shown["deny_ports"]) == {(22, 22)}, shown
    async with proxy_relay(
        lab(backend), proxy_allow=["gpu-box.lan", "::1"], proxy_deny_port=["22", "6000-6010"]
    ) as relay:
        shown = await rules(relay)
        assert shown["allow"] == ["gpu-box.lan", "::1"], shown  # given entries replace loopback
        assert port_ranges(shown["deny_ports"]) == {(22, 22), (6000, 6010)}, shown
