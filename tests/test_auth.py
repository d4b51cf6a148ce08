"""Tables for the token check and the Origin check."""

from __future__ import annotations

import pytest

from jupyter_relay.auth import (
    Credentials,
    Verdict,
    check,
    cookie_from_header,
    cookie_name,
    cookie_value,
    gather,
    is_navigation,
    needs_origin_check,
    origin_allowed,
    parse_authorization,
    token_from_auth_url,
)

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, False)),
        ("token abc", ("abc", False)),
        ("Token  abc ", ("abc", False)),
        ("Bearer abc", ("abc", False)),
        ("Basic dXNlcjpwYXNz", (None, True)),
        ("token", (None, True)),
        ("", (None, True)),
    ],
)
def test_parse_authorization(value: str | None, expected: tuple[str | None, bool]) -> None:
    assert parse_authorization(value) == expected


def creds(
    query: str | None = None,
    header: str | None = None,
    cookie: str | None = None,
    malformed: bool = False,
) -> Credentials:
    return Credentials(query=query, header=header, header_malformed=malformed, cookie=cookie)


@pytest.mark.parametrize(
    ("offered", "verdict"),
    [
        (creds(), Verdict.MISSING),
        (creds(query=TOKEN), Verdict.OK),
        (creds(header=TOKEN), Verdict.OK),
        (creds(cookie=cookie_value(TOKEN)), Verdict.OK),
        (creds(cookie=TOKEN), Verdict.WRONG),  # the cookie holds an HMAC, not the token
        (creds(query="nope"), Verdict.WRONG),
        (creds(header="nope", cookie=cookie_value(TOKEN)), Verdict.OK),
        (creds(header=TOKEN + "x"), Verdict.WRONG),
        (creds(malformed=True), Verdict.WRONG),
        (creds(query=""), Verdict.WRONG),
    ],
)
def test_check(offered: Credentials, verdict: Verdict) -> None:
    assert check(TOKEN, offered) is verdict


def test_cookie_is_per_port_and_not_the_token() -> None:
    assert cookie_name(8765) != cookie_name(8766)
    assert TOKEN not in cookie_value(TOKEN)
    assert cookie_value(TOKEN) != cookie_value(TOKEN + "2")


ALLOW = ("https://colab.research.google.com",)


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        (None, "127.0.0.1:8765", "http", True),
        ("http://127.0.0.1:8765", "127.0.0.1:8765", "http", True),
        ("HTTP://127.0.0.1:8765", "127.0.0.1:8765", "http", True),
        ("http://localhost:8765", "127.0.0.1:8765", "http", False),
        ("http://127.0.0.1:8766", "127.0.0.1:8765", "http", False),
        ("https://127.0.0.1:8765", "127.0.0.1:8765", "http", False),
        ("https://colab.research.google.com", "127.0.0.1:8765", "http", True),
        ("https://evil.example.org", "127.0.0.1:8765", "http", False),
        ("null", "127.0.0.1:8765", "http", False),
        ("http://[::1]:8765", "[::1]:8765", "http", True),
        ("http://127.0.0.1:8765", None, "http", False),
        ("file://", "127.0.0.1:8765", "http", False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, scheme: str, allowed: bool) -> None:
    assert origin_allowed(origin, host, scheme, ALLOW) is allowed


@pytest.mark.parametrize(
    ("method", "upgrade", "expected"),
    [
        ("GET", False, False),
        ("HEAD", False, False),
        ("OPTIONS", False, False),
        ("GET", True, True),
        ("POST", False, True),
        ("DELETE", False, True),
        ("patch", False, True),
    ],
)
def test_needs_origin_check(method: str, upgrade: bool, expected: bool) -> None:
    assert needs_origin_check(method, upgrade) is expected


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (None, None),
        ("a=1; jupyter-relay-1=abc; b=2", "abc"),
        ('jupyter-relay-1="quoted"', "quoted"),
        ("jupyter-relay-10=no", None),
        ("x=jupyter-relay-1=no", None),
    ],
)
def test_cookie_from_header(header: str | None, value: str | None) -> None:
    assert cookie_from_header(header, "jupyter-relay-1") == value


def test_gather_reads_query_header_and_cookie() -> None:
    creds = gather("a=1&token=q%2Bv", "Bearer h", "x=1; jupyter-relay-1=c", "jupyter-relay-1")
    assert creds == Credentials(query="q+v", header="h", header_malformed=False, cookie="c")
    assert gather("", "Basic x", None, "jupyter-relay-1") == Credentials(
        query=None, header=None, header_malformed=True, cookie=None
    )


@pytest.mark.parametrize(
    ("authorization", "token_header", "header"),
    [
        (None, "t", "t"),  # the Go mixer's clients
        ("token ", "t", "t"),  # ...behind Jupyter's GatewayClient, which adds this empty one
        ("token a", "t", "a"),  # a real Authorization wins
        (None, "  ", None),
    ],
)
def test_gather_takes_a_token_header_when_authorization_has_none(
    authorization: str | None, token_header: str, header: str | None
) -> None:
    creds = gather("", authorization, None, "jupyter-relay-1", token_header)
    assert creds.header == header


@pytest.mark.parametrize(
    ("method", "websocket", "mode", "accept", "expected"),
    [
        ("GET", False, "navigate", None, True),
        ("GET", False, "cors", "text/html", False),
        ("GET", False, None, "text/html,application/xhtml+xml", True),
        ("GET", False, None, "application/json", False),
        ("GET", False, "", "text/html", False),
        ("GET", True, "navigate", "text/html", False),
        ("POST", False, "navigate", "text/html", False),
    ],
)
def test_is_navigation(
    method: str, websocket: bool, mode: str | None, accept: str | None, expected: bool
) -> None:
    assert is_navigation(method, websocket, mode, accept) is expected


@pytest.mark.parametrize(
    ("auth_url", "token"),
    [
        ("http://127.0.0.1:8888/?token=abc", "abc"),
        ("http://127.0.0.1:8888/tree?x=1&token=a%2Bb", "a+b"),
        ("http://127.0.0.1:8888/", None),
        ("http://localhost:8888/?token=abc", None),  # the same machine, another origin
        ("https://127.0.0.1:8888/?token=abc", None),
        ("http://127.0.0.1:8889/?token=abc", None),
        ("http://127.0.0.1/?token=abc", None),
        ("/?token=abc", None),
        ("http://[::1/?token=abc", None),
        (None, None),
    ],
)
def test_token_from_auth_url_only_on_the_own_origin(
    auth_url: str | None, token: str | None
) -> None:
    assert token_from_auth_url(auth_url, "http", "127.0.0.1:8888") == token
