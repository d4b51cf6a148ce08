"""The one mapping from the relay's errors to HTTP answers, and the answers' bytes."""

from __future__ import annotations

import json

from jupyter_relay import errors
from jupyter_relay.responses import ANSWERS, answer_of, relay_error_bytes


def test_every_relay_error_has_one_http_answer() -> None:
    """The error tree knows nothing of HTTP; `responses.ANSWERS` maps each kind once."""
    kinds = [
        k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.RelayError)
    ]
    assert set(kinds) == set(ANSWERS)
    assert answer_of(errors.BackendTimeout("b", "slow")) == (504, "Backend Timeout")
    assert answer_of(errors.NotFound("gone", reason="Not Found on any backend (a)")) == (
        404,
        "Not Found on any backend (a)",
    )
    assert not hasattr(errors.BackendTimeout, "status")


def test_the_engines_error_bytes_say_it_in_jupyters_shape() -> None:
    error = errors.BackendUnreachable("lab", "backend 'lab' refused the connection")
    answer = relay_error_bytes("/api/contents", "GET", "", error)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Backend Unreachable\r\n")
    assert b"Connection: close" in head and b"X-Content-Type-Options: nosniff" in head
    assert json.loads(body) == {
        "message": "backend 'lab' refused the connection",
        "reason": "Backend Unreachable",
    }
    page = relay_error_bytes("/lab", "GET", "text/html", errors.NotFound("no <b>such</b>"))
    assert b"no &lt;b&gt;such&lt;/b&gt;" in page
