"""The gate as pure rules: one canonical path, the Host rule, and every decision."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from jupyter_relay import auth, gate
from jupyter_relay.gate import BadPath, Outcome, Policy, canonical_path, decide
from jupyter_relay.headers import query_param, raw_after, strip_query_param

TOKEN = "gate-token-0123456789"
POLICY = Policy(token=TOKEN, cookie_name="jupyter-relay-8765", allow_origins=())
LOOPBACK = {"host": "127.0.0.1:8765"}
WITH_TOKEN = {**LOOPBACK, "authorization": f"token {TOKEN}"}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/lab/tree/a%20b.ipynb", "/lab/tree/a b.ipynb"),
        ("/%72elay/healthz", "/relay/healthz"),
        ("/api/contents/caf%C3%A9", "/api/contents/café"),
        ("/files/100%25.txt", "/files/100%.txt"),
        ("/user/a%40b/lab", "/user/a@b/lab"),
        ("/api//kernels", "/api//kernels"),
        ("/x;y=1/z", "/x;y=1/z"),
        ("/a/.hidden/..x", "/a/.hidden/..x"),
        # Past a port-proxy or app prefix, the path is the app's: %2F stays encoded.
        ("/proxy/8050/a%2Fb", "/proxy/8050/a%2Fb"),
        ("/proxy/absolute/8050/a%5cb", "/proxy/absolute/8050/a%5Cb"),
        ("/proxy/h.example.org:80/x%2f%2F", "/proxy/h.example.org:80/x%2F%2F"),
        ("/apps/dash/a%2Fb/%FF", "/apps/dash/a%2Fb/\ufffd"),
    ],
)
def test_canonical_paths(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/relay%2Fhealthz", "encoded slashes"),
        ("/relay%2fhealthz", "encoded slashes"),
        ("/%72elay%2Fhealthz", "encoded slashes"),
        ("/http_over_websocket%2Fdiagnose", "encoded slashes"),
        ("/api/kernels%5Cx", "encoded slashes"),
        ("/pro%78y/8050/a%2Fb", "encoded slashes"),  # not the literal prefix: not the app's
        ("/proxy/8050%2F/x", "encoded slashes"),
        ("/a\\b", "backslashes"),
        ("/a/../relay/healthz", "'..'"),
        ("/a/./b", "'.'"),
        ("/a/%2e%2e/b", "'..'"),
        ("/a/%2E/b", "'.'"),
        ("/proxy/8050/../../relay/healthz", "'..'"),
        ("/a%00b", "control"),
        ("/a%0d%0aX:%20y", "control"),
        ("/a%7f", "control"),
        ("/x%zz", "two hex digits"),
        ("/x%2", "two hex digits"),
        ("/caf%E9", "not UTF-8"),
        ("//evil.example/x", "single /"),
        ("http://evil.example/x", "single /"),
        ("*", "single /"),
    ],
)
def test_ambiguous_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(BadPath, match=why):
        canonical_path(raw)
    decision = decide(POLICY, "GET", raw, WITH_TOKEN)
    assert (decision.outcome, decision.status) == (Outcome.REFUSE, 400)
    assert "one way" in decision.message


@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_a_quoted_path_reads_back_as_its_segments(segments: list[str]) -> None:
    """Any segments, each percent-encoded as clients do, read back as they were (or 400)."""
    raw = "/" + "/".join(quote(s, safe="") for s in segments)
    try:
        path = canonical_path(raw)
    except BadPath:
        assert raw.startswith("//") or any(
            s in (".", "..")
            or "/" in s
            or "\\" in s
            or any(ord(c) < 32 or ord(c) == 127 for c in s)
            for s in segments
        )
        return
    assert path.split("/")[1:] == segments


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=40))
def test_every_accepted_path_routes_alike_in_aiohttp(raw_tail: str) -> None:
    """Where the gate accepts a path, aiohttp's router (yarl's path_safe) sees its segments.

    aiohttp routes on `path_safe`, which keeps %2F and %25 encoded; the gate refuses
    %2F outside an app's part, so both count the same segments and agree on the
    relay's own prefixes (`/relay`, `/api/kernels`, ...).
    """
    raw = "/" + raw_tail
    try:
        path = canonical_path(raw)
    except BadPath:
        return
    if any(ord(c) > 126 or c in " ?#" for c in raw):
        return  # not a request target a client can send as it is
    seen = URL(raw, encoded=True).path_safe
    assert seen.count("/") == path.count("/")
    assert seen.split("/")[:3] == path.split("/")[:3] or "%25" in raw or "%2" in raw.lower()


def test_raw_after_counts_segments_whatever_their_spelling() -> None:
    assert raw_after("/proxy/8050/a%2Fb?x", "/proxy/8050") == "/a%2Fb?x"
    assert raw_after("/pro%78y/8050/x", "/proxy/8050") == "/x"
    assert raw_after("/proxy/8050", "/proxy/8050") == "/"
    assert raw_after("/proxy/8050/", "/proxy/8050/") == "/"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8765", True),
        ("127.8.9.10", True),
        ("localhost:8765", True),
        ("LOCALHOST.", True),
        ("[::1]:8765", True),
        ("", True),  # no Host (HTTP/1.0 tools): no page of a browser
        (None, True),
        ("evil.example", False),
        ("evil.example:8765", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.1", False),
        ("[::ffff:7f00:1]", False),
        ("jupyter.internal:443", True),  # given with --allow-host
    ],
)
def test_host_rule(host: str | None, allowed: bool) -> None:
    assert gate.host_allowed(host, frozenset({"jupyter.internal"})) is allowed


@pytest.mark.parametrize("token", [TOKEN, None])
def test_foreign_host_refused_with_or_without_token(token: str | None) -> None:
    """DNS rebinding: `--no-auth` too (jupyter_server refuses it with an empty token)."""
    policy = Policy(token=token, cookie_name="c")
    headers = {"host": "evil.example:8765", "authorization": f"token {TOKEN}"}
    decision = decide(policy, "POST", "/api/kernels", headers)
    assert (decision.outcome, decision.status) == (Outcome.REFUSE, 403)
    assert "--allow-host evil.example" in decision.message
    anywhere = Policy(token=token, cookie_name="c", allowed_hosts=None)  # not on loopback
    assert decide(anywhere, "POST", "/api/kernels", headers).outcome is Outcome.PASS
    star = Policy(token=token, cookie_name="c", allowed_hosts=frozenset({"*"}))
    assert decide(star, "POST", "/api/kernels", headers).outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("method", "target", "websocket", "outcome"),
    [
        ("GET", "/relay/healthz", False, Outcome.PASS),
        ("HEAD", "/relay/healthz", False, Outcome.PASS),
        ("GET", "/%72elay/healthz", False, Outcome.PASS),  # the same path, decoded
        ("GET", "/relay/healthz?a=b", False, Outcome.PASS),
        ("POST", "/relay/healthz", False, Outcome.REFUSE),
        ("GET", "/relay/healthz", True, Outcome.REFUSE),
        ("GET", "/relay/healthz/", False, Outcome.REFUSE),
        ("GET", "/relay//healthz", False, Outcome.REFUSE),
        ("GET", "/relay/healthz;x", False, Outcome.REFUSE),
        ("GET", "/relay%2Fhealthz", False, Outcome.REFUSE),
        ("GET", "/api/status", False, Outcome.REFUSE),
    ],
)
def test_only_the_health_check_needs_no_token(
    method: str, target: str, websocket: bool, outcome: Outcome
) -> None:
    decision = decide(POLICY, method, target, LOOPBACK, websocket=websocket)
    assert decision.outcome is outcome, decision


@pytest.mark.parametrize(
    ("method", "target", "websocket", "public"),
    [
        ("GET", "/relay/metrics", False, True),
        ("HEAD", "/relay/metrics", False, True),
        ("GET", "/%72elay/metrics?x=1", False, True),
        ("POST", "/relay/metrics", False, False),
        ("GET", "/relay/metrics", True, False),
        ("GET", "/relay/metrics/", False, False),
        ("GET", "/relay%2Fmetrics", False, False),
        ("GET", "/relay/api/status", False, False),
    ],
)
def test_metrics_need_the_token_unless_public(
    method: str, target: str, websocket: bool, public: bool
) -> None:
    assert decide(POLICY, method, target, LOOPBACK, websocket=websocket).outcome is Outcome.REFUSE
    scraped = Policy(token=TOKEN, cookie_name="c", metrics_public=True)
    decision = decide(scraped, method, target, LOOPBACK, websocket=websocket)
    assert (decision.outcome is Outcome.PASS) is public, decision


def test_token_origin_and_navigation() -> None:
    missing = decide(POLICY, "GET", "/api/status", LOOPBACK)
    assert (missing.status, missing.reason) == (403, "Token Required")  # as jupyter_server
    assert dict(missing.headers)["WWW-Authenticate"].startswith("token")
    wrong = {**LOOPBACK, "authorization": "token nope"}
    assert decide(POLICY, "GET", "/api/status", wrong).status == 403
    assert decide(POLICY, "GET", "/api/status", WITH_TOKEN).outcome is Outcome.PASS
    cookie = {**LOOPBACK, "cookie": f"jupyter-relay-8765={auth.cookie_value(TOKEN)}"}
    assert decide(POLICY, "GET", "/lab", cookie).outcome is Outcome.PASS
    foreign = {**WITH_TOKEN, "origin": "https://evil.example.org"}
    refused = decide(POLICY, "POST", "/api/kernels", foreign)
    assert refused.status == 403 and "--allow-origin https://evil.example.org" in refused.message
    assert decide(POLICY, "GET", "/api/kernels", foreign).outcome is Outcome.PASS
    page = {**LOOPBACK, "sec-fetch-mode": "navigate"}
    went = decide(POLICY, "GET", f"/lab/tree/a%20b?x=1&token={TOKEN}&y=2", page)
    assert went.outcome is Outcome.REDIRECT
    assert went.location == "/lab/tree/a%20b?x=1&y=2"  # the client's bytes, less the token


@pytest.mark.parametrize("name", ["%74oken", "t%6Fken", "%74%6F%6B%65%6E", "%74oken"])
def test_query_names_are_read_decoded(name: str) -> None:
    """`?%74oken=` is `token` to every server: it counts, and it is never passed on."""
    query = f"a=1&{name}={TOKEN}&b=%2F"
    assert query_param(query, "token") == TOKEN
    assert strip_query_param(query, "token") == "a=1&b=%2F"
    page = {**LOOPBACK, "sec-fetch-mode": "navigate"}
    went = decide(POLICY, "GET", f"/lab?{query}", page)
    assert went.outcome is Outcome.REDIRECT and went.location == "/lab?a=1&b=%2F"


def test_colab_auth_url_counts_only_on_the_bridge() -> None:
    auth_url = quote(f"http://127.0.0.1:8765/?token={TOKEN}", safe="")
    for name in ("jupyter_http_over_ws_auth_url", "jupyter_http_over_ws_auth_%75rl"):
        query = f"{name}={auth_url}"
        bridge = decide(POLICY, "GET", f"/http_over_websocket?{query}", LOOPBACK, websocket=True)
        assert bridge.outcome is Outcome.PASS
        other = decide(POLICY, "GET", f"/api/kernels?{query}", LOOPBACK)
        assert other.reason == "Token Required"
        encoded = decide(POLICY, "GET", f"/http_over_websocket%2Fx?{query}", LOOPBACK)
        assert encoded.status == 400


def test_head_limit_is_one_answer() -> None:
    decision = decide(POLICY, "GET", "/api/status", WITH_TOKEN, head_size=gate.HEAD_LIMIT + 1)
    assert (decision.status, decision.reason) == (431, "Request Header Fields Too Large")
    ok = decide(POLICY, "GET", "/api/status", WITH_TOKEN, head_size=gate.HEAD_LIMIT)
    assert ok.outcome is Outcome.PASS


@settings(max_examples=500)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "BREW"]),
    target=st.text(max_size=60).map(lambda t: "/" + t),
    websocket=st.booleans(),
)
def test_without_a_credential_only_the_health_check_passes(
    method: str, target: str, websocket: bool
) -> None:
    decision = decide(POLICY, method, target, LOOPBACK, websocket=websocket)
    if decision.outcome is not Outcome.REFUSE:
        assert decision.outcome is Outcome.PASS
        assert decision.path == gate.HEALTH and method in ("GET", "HEAD") and not websocket
    else:
        assert decision.status in (400, 403)


def test_a_refusal_says_where_the_token_is_kept() -> None:
    hint = " The token is kept in /home/u/.local/share/jupyter/jupyter-relay/token."
    policy = gate.Policy(token="t0ken", cookie_name="c", allowed_hosts=None, token_hint=hint)
    for headers in ({}, {"authorization": "token wrong"}):
        decision = gate.decide(policy, "GET", "/api/status", headers)
        assert decision.status == 403 and decision.message.endswith(hint)
        assert "t0ken" not in decision.message
