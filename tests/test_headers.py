"""Tables for the pure rewriting of paths, queries and headers."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from jupyter_relay.headers import (
    is_upgrade,
    page_to_scrub,
    query_param,
    remove_cookie,
    request_headers,
    response_headers,
    rewrite_location,
    rewrite_set_cookie,
    strip_query_param,
    upstream_path,
)


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("/api/kernels", "/", "/api/kernels"),
        ("/api/kernels", "/base/", "/base/api/kernels"),
        ("/base/api/kernels", "/base/", "/base/api/kernels"),
        ("/base", "/base/", "/base"),
        ("/baseball/x", "/base/", "/base/baseball/x"),
        ("/files/a%23b%2Fc", "/", "/files/a%23b%2Fc"),
        ("/user/me/lab", "/user/me/", "/user/me/lab"),
    ],
)
def test_upstream_path(raw: str, base: str, expected: str) -> None:
    assert upstream_path(raw, base) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("token=abc", ""),
        ("a=1&token=abc&b=%2F", "a=1&b=%2F"),
        ("tokens=1&token", "tokens=1"),
        ("x=token%3D1", "x=token%3D1"),
        ("a=%E2%9C%93&token=t&token=u", "a=%E2%9C%93"),
        ("session_id=s&_xsrf=x", "session_id=s&_xsrf=x"),
    ],
)
def test_strip_query_param(query: str, expected: str) -> None:
    assert strip_query_param(query, "token") == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("jupyter-relay-8765=abc", ""),
        ("_xsrf=1; jupyter-relay-8765=abc; other=2", "_xsrf=1; other=2"),
        ("jupyter-relay-87650=keep", "jupyter-relay-87650=keep"),
    ],
)
def test_remove_cookie(header: str, expected: str) -> None:
    assert remove_cookie(header, "jupyter-relay-8765") == expected


def forward(incoming: dict[str, str], websocket: bool = False) -> CIMultiDict[str]:
    return request_headers(
        CIMultiDict(incoming).items(),
        client_ip="127.0.0.2",
        scheme="http",
        host="127.0.0.1:8765",
        backend_origin="http://127.0.0.1:9999",
        relay_cookie="jupyter-relay-8765",
        credentials=[("Authorization", "token backend-secret")],
        websocket=websocket,
    )


def test_request_headers_replace_credentials_and_drop_hop_by_hop() -> None:
    out = forward(
        {
            "Authorization": "token relay-secret",
            "token": "relay-secret",  # the Go mixer's spelling, also the relay's
            "Host": "127.0.0.1:8765",
            "Connection": "keep-alive, X-Private",
            "X-Private": "hop",
            "Keep-Alive": "timeout=5",
            "Transfer-Encoding": "chunked",
            "Proxy-Authorization": "Basic x",
            "Cookie": "jupyter-relay-8765=h; _xsrf=x",
            "Accept-Encoding": "gzip",
        }
    )
    assert out["Authorization"] == "token backend-secret"
    assert out.getall("Authorization") == ["token backend-secret"]
    for name in (
        "Host",
        "Connection",
        "X-Private",
        "Keep-Alive",
        "Transfer-Encoding",
        "Proxy-Authorization",
        "token",
    ):
        assert name not in out
    assert out["Cookie"] == "_xsrf=x"
    assert out["Accept-Encoding"] == "gzip"
    assert "relay-secret" not in str(out)


def test_request_headers_forwarded_trio_and_origin() -> None:
    out = forward(
        {
            "X-Forwarded-For": "10.1.1.1",
            "X-Forwarded-Host": "evil",
            "Origin": "http://127.0.0.1:8765",
            "Referer": "http://127.0.0.1:8765/lab/tree?x=1",
        }
    )
    assert out["X-Forwarded-For"] == "10.1.1.1, 127.0.0.2"
    assert out["X-Forwarded-Host"] == "127.0.0.1:8765"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["Origin"] == "http://127.0.0.1:9999"
    assert out["Referer"] == "http://127.0.0.1:9999/lab/tree?x=1"


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        ("http://127.0.0.1:8765/lab?token=relay-secret", "http://127.0.0.1:9999/lab"),
        (
            "http://127.0.0.1:8765/lab?a=1&token=relay-secret&b=2",
            "http://127.0.0.1:9999/lab?a=1&b=2",
        ),
        ("http://127.0.0.1:8765/lab?tokens=1#x", "http://127.0.0.1:9999/lab?tokens=1#x"),
        ("/lab?token=relay-secret", "/lab"),
    ],
)
def test_request_headers_referer_loses_the_relay_token(referer: str, expected: str) -> None:
    assert forward({"Referer": referer})["Referer"] == expected


def test_request_headers_websocket_handshake_left_to_client() -> None:
    out = forward(
        {
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "k",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "v1.kernel.websocket.jupyter.org",
            "Sec-WebSocket-Extensions": "permessage-deflate",
        },
        websocket=True,
    )
    assert not [k for k in out if k.lower().startswith("sec-websocket") or k == "Upgrade"]


ORIGINS = frozenset({"http://127.0.0.1:9999", "http://localhost:9999"})


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/lab", "/lab"),
        ("http://127.0.0.1:9999/lab?x=%2F", "/lab?x=%2F"),
        ("http://localhost:9999/base/tree#frag", "/base/tree#frag"),
        ("http://127.0.0.1:9999", "/"),
        ("https://elsewhere.example.org/login", "https://elsewhere.example.org/login"),
        ("http://127.0.0.1:99990/x", "http://127.0.0.1:99990/x"),
    ],
)
def test_rewrite_location(location: str, expected: str) -> None:
    assert rewrite_location(location, ORIGINS) == expected


@pytest.mark.parametrize(
    ("cookie", "https", "expected"),
    [
        ("_xsrf=abc; Path=/base/", False, "_xsrf=abc; Path=/"),
        ("a=b; Domain=hub.example.org; Secure; HttpOnly", False, "a=b; HttpOnly"),
        ("a=b; Secure; SameSite=None", False, "a=b; SameSite=Lax"),
        ("a=b; Secure; SameSite=None", True, "a=b; Secure; SameSite=None"),
        (
            "a=b; expires=Wed, 01 Jan 2030 00:00:00 GMT",
            False,
            "a=b; expires=Wed, 01 Jan 2030 00:00:00 GMT",
        ),
    ],
)
def test_rewrite_set_cookie(cookie: str, https: bool, expected: str) -> None:
    assert rewrite_set_cookie(cookie, relay_is_https=https) == expected


@pytest.mark.parametrize(
    ("cookie", "relative", "expected"),
    [
        # A relative app's paths are under its prefix on the relay.
        ("s=1; Path=/", True, "s=1; Path=/proxy/8050/"),
        ("s=1; Path=/dash/", True, "s=1; Path=/proxy/8050/dash/"),
        ("s=1; Path=", True, "s=1; Path=/proxy/8050/"),
        ("s=1", True, "s=1"),  # the browser's default: the request's directory, inside
        # An absolute app sees the relay's paths: kept inside the prefix, else the prefix.
        ("s=1; Path=/proxy/8050/x", False, "s=1; Path=/proxy/8050/x"),
        ("s=1; Path=/proxy/8050", False, "s=1; Path=/proxy/8050"),
        ("s=1; Path=/", False, "s=1; Path=/proxy/8050/"),
        ("s=1; Path=/proxy/80501/", False, "s=1; Path=/proxy/8050/"),
        ("s=1; Path=/lab", False, "s=1; Path=/proxy/8050/"),
    ],
)
def test_an_apps_cookies_stay_under_its_prefix(cookie: str, relative: bool, expected: str) -> None:
    got = rewrite_set_cookie(cookie, relay_is_https=False, scope="/proxy/8050", relative=relative)
    assert got == expected


def test_no_upstream_may_set_the_relays_cookie() -> None:
    out = response_headers(
        [
            ("Set-Cookie", "jupyter-relay-8765=forged; Path=/"),
            ("Set-Cookie", " jupyter-relay-8765 =; Max-Age=0"),
            ("Set-Cookie", "jupyter-relay-87650=other; Path=/"),
        ],
        backend_origins=ORIGINS,
        relay_is_https=False,
        relay_cookie="jupyter-relay-8765",
        cookie_scope="/proxy/8050",
        cookie_relative=True,
    )
    assert out.getall("Set-Cookie") == ["jupyter-relay-87650=other; Path=/proxy/8050/"]


def test_response_headers() -> None:
    out = response_headers(
        [
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "gzip"),
            ("Location", "http://127.0.0.1:9999/tree"),
            ("Set-Cookie", "a=1; Path=/x/"),
            ("Set-Cookie", "b=2"),
        ],
        backend_origins=ORIGINS,
        relay_is_https=False,
    )
    assert "X-Hop" not in out and "Transfer-Encoding" not in out and "Connection" not in out
    assert out["Content-Encoding"] == "gzip"
    assert out["Location"] == "/tree"
    assert out.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("token=abc", "abc"),
        ("a=1&token=x%2By&token=second", "x+y"),
        ("tokens=1", None),
        ("", None),
        ("token=", ""),
        ("token=a+b", "a b"),
    ],
)
def test_query_param(query: str, value: str | None) -> None:
    assert query_param(query, "token") == value


@pytest.mark.parametrize(
    ("content_type", "encoding", "expected"),
    [
        ("text/html", None, True),
        ("Text/HTML; charset=utf-8", None, True),
        ("text/html", "gzip", False),
        ("text/plain", None, False),
        ("application/json", None, False),
        ("text/htmlx", None, False),
    ],
)
def test_page_to_scrub(content_type: str, encoding: str | None, expected: bool) -> None:
    assert page_to_scrub(content_type, encoding) is expected


@pytest.mark.parametrize(
    ("upgrade", "connection", "expected"),
    [
        ("websocket", "Upgrade", True),
        ("WebSocket", "keep-alive, Upgrade", True),
        ("websocket", "upgraded", False),  # a token, not a substring
        ("websocket", "", False),
        ("h2c", "Upgrade", False),
        ("", "Upgrade", False),
    ],
)
def test_is_upgrade(upgrade: str, connection: str, expected: bool) -> None:
    headers = CIMultiDict({"upgrade": upgrade, "connection": connection})
    assert is_upgrade(headers) is expected
