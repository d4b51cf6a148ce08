"""Cross-origin answers: which origins get them, the preflight, the gate's part."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_relay import cors, gate

COLAB = "https://colab.research.google.com"
POLICY = gate.Policy(token="t0ken", cookie_name="c", allow_origins=(COLAB,), allowed_hosts=None)


def preflight(origin: str, **extra: str) -> dict[str, str]:
    return {
        "host": "127.0.0.1:8765",
        "origin": origin,
        "access-control-request-method": "POST",
        **extra,
    }


def test_an_allowed_origins_preflight_is_answered_without_credentials() -> None:
    headers = preflight(
        COLAB,
        **{
            "access-control-request-headers": "authorization,content-type,x-colab-thing",
            "access-control-request-private-network": "true",
        },
    )
    decision = gate.decide(POLICY, "OPTIONS", "/api/colab/build-info", headers)
    assert decision.outcome is gate.Outcome.PREFLIGHT and decision.status == 204
    fields = dict(decision.headers)
    assert fields["Access-Control-Allow-Origin"] == COLAB
    assert fields["Access-Control-Allow-Credentials"] == "true"
    assert fields["Vary"] == "Origin"
    assert "PATCH" in fields["Access-Control-Allow-Methods"]
    allowed = [h.strip().lower() for h in fields["Access-Control-Allow-Headers"].split(",")]
    assert allowed.count("authorization") == 1  # asked and always allowed: once
    assert {"content-type", "x-xsrftoken", "x-colab-thing"} <= set(allowed)
    assert fields["Access-Control-Allow-Private-Network"] == "true"
    assert int(fields["Access-Control-Max-Age"]) > 0


def test_a_foreign_origins_preflight_is_refused_naming_the_flag() -> None:
    decision = gate.decide(POLICY, "OPTIONS", "/api/sessions", preflight("https://evil.example"))
    assert decision.outcome is gate.Outcome.REFUSE and decision.status == 403
    assert "--allow-origin https://evil.example" in decision.message


def test_an_options_request_that_is_no_preflight_needs_the_token() -> None:
    decision = gate.decide(POLICY, "OPTIONS", "/api/sessions", {"host": "127.0.0.1:8765"})
    assert decision.outcome is gate.Outcome.REFUSE and decision.status == 403


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (COLAB, True),
        (COLAB.upper(), True),  # origins compare without case
        (f" {COLAB}", True),
        ("https://colab.research.google.com.evil.example", False),
        ("http://colab.research.google.com", False),
        ("null", False),
        (None, False),
    ],
)
def test_which_origins_get_cross_origin_answers(origin: str | None, allowed: bool) -> None:
    assert cors.allowed(origin, (COLAB,)) is allowed


def test_every_answer_field_for_an_allowed_origin() -> None:
    fields = dict(cors.answer_headers(COLAB))
    assert fields["Access-Control-Allow-Origin"] == COLAB  # never *, with credentials
    assert fields["Access-Control-Allow-Credentials"] == "true"
    assert fields["Vary"] == "Origin"
    exposed = {h.strip() for h in fields["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Content-Disposition", "Last-Modified", "ETag"} <= exposed


def test_a_backends_own_cors_fields_are_dropped() -> None:
    kept = cors.without_cors(
        [
            ("Access-Control-Allow-Origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("ETag", "x"),
        ]
    )
    assert kept == [("ETag", "x")]


@given(st.text(max_size=200))
def test_asked_headers_that_are_no_field_names_are_never_echoed(asked: str) -> None:
    fields = dict(
        cors.preflight_headers(COLAB, {"access-control-request-headers": asked, "origin": COLAB})
    )
    for name in fields["Access-Control-Allow-Headers"].split(", "):
        assert name and all(c.isalnum() or c in "!#$%&'*+.^_`|~-" for c in name), name
        assert "\r" not in name and "\n" not in name
