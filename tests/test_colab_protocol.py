"""The HTTP-over-WebSocket messages and versions, without I/O."""

from __future__ import annotations

import base64
import json

import pytest

from jupyter_relay import colab_protocol as protocol


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("0.0.1a3", "0.0.1"),
        ("0.0.1", "0.0.7"),
        ("0.0.7", "0.0.8a1"),
        ("0.0.7a9", "0.0.7b1"),
        ("0.0.7b2", "0.0.7"),
        ("0.1", "1.0"),
    ],
)
def test_versions_order(older: str, newer: str) -> None:
    assert protocol.parse_version(older) < protocol.parse_version(newer)
    assert protocol.parse_version("0.0.7") > protocol.parse_version("0.0.7b1")
    assert protocol.parse_version("1.0") == protocol.parse_version("1.0.0")


# StrictVersion's own examples of versions it takes and refuses: the reference parses
# `min_version` with it, so the relay refuses what the reference refuses.
@pytest.mark.parametrize("text", ["0.4", "0.4.0", "0.5a1", "0.5b3", "0.9.6", "1.0.4a3"])
def test_versions_strictversion_takes(text: str) -> None:
    protocol.parse_version(text)


@pytest.mark.parametrize(
    "text", ["1", "2.7.2.2", "1.3.a4", "1.3pl1", "1.3c4", "0.0.7rc1", "v0.0.7", ""]
)
def test_versions_strictversion_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        protocol.parse_version(text)
    assert protocol.version_problem(text) == f'Invalid "min_version" provided: {text}'
    assert protocol.is_outdated(text) is False


def test_versions_are_named_as_strictversion_prints_them() -> None:
    assert protocol.version_problem("1.0.0") == (
        "Requested version (1.0) > Current version (0.0.7). Please upgrade this package."
    )
    assert protocol.is_outdated("0.0.8a1") and not protocol.is_outdated("0.0.7")
    assert protocol.version_problem(" 0.0.7\t") is None  # tornado strips the argument


def test_close_reason_is_cut_between_characters() -> None:
    reason = protocol.close_reason("é" * 100)  # 200 bytes in UTF-8
    assert len(reason) <= 123
    assert reason.decode() == "é" * 61


def test_version_problems_use_the_references_words() -> None:
    assert protocol.version_problem(None) is None
    assert protocol.version_problem("0.0.1a3") is None  # what Colab sends
    assert protocol.version_problem("0.0.7") is None
    assert protocol.version_problem("0.0.8") == (
        "Requested version (0.0.8) > Current version (0.0.7). Please upgrade this package."
    )
    assert protocol.version_problem("x.y") == 'Invalid "min_version" provided: x.y'
    long = protocol.version_problem("9" * 500)
    assert long is not None and len(protocol.close_reason(long)) <= 123


def test_parse_request_and_bodies() -> None:
    raw = bytes(range(256))
    request = protocol.parse_request(
        json.dumps(
            {
                "message_id": 7,
                "method": "put",
                "path": "/api/contents/x?a=1",
                "body_base64": base64.b64encode(raw).decode(),
            }
        )
    )
    assert request == protocol.Request(7, "PUT", "/api/contents/x?a=1", raw)
    text = protocol.parse_request(
        json.dumps({"message_id": "m", "method": "POST", "path": "/api", "body": "é"})
    )
    assert text.body == "é".encode()


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ("not json", {"status": 400, "statusText": "JSON input is required.", "done": True}),
        ("[1]", {"status": 400, "statusText": "JSON input is required.", "done": True}),
        (
            json.dumps({"message_id": 3, "method": "GET"}),
            {
                "message_id": 3,
                "status": 400,
                "statusText": "Invalid request. The body must contain the following fields: "
                "message_id, method, path",
                "done": True,
            },
        ),
    ],
)
def test_bad_messages_get_the_references_answers(message: str, answer: dict[str, object]) -> None:
    with pytest.raises(protocol.BadMessage) as info:
        protocol.parse_request(message)
    assert info.value.answer == answer


@pytest.mark.parametrize(
    "fields",
    [
        {"method": "GET", "path": "relative"},
        {"method": "GET", "path": "//evil.example.org/x"},
        {"method": "GE T", "path": "/api"},
        {"method": "GET", "path": "/api", "body_base64": "***"},
    ],
)
def test_malformed_requests_are_refused_with_their_id(fields: dict[str, str]) -> None:
    with pytest.raises(protocol.BadMessage) as info:
        protocol.parse_request(json.dumps({"message_id": 1, **fields}))
    assert info.value.answer["message_id"] == 1 and info.value.answer["status"] == 400


def test_answer_messages() -> None:
    first = protocol.first(1, 200, "OK", {"A": "b"}, b"\x00\xff", False)
    assert first == {
        "message_id": 1,
        "status": 200,
        "statusText": "OK",
        "headers": {"A": "b"},
        "data": "AP8=",
        "done": False,
    }
    empty = protocol.first(2, 204, "No Content", {}, b"", True)
    assert "data" not in empty and empty["done"] is True
    assert protocol.chunk(1, b"x", True) == {"message_id": 1, "data": "eA==", "done": True}
    assert protocol.joined_headers([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]) == {
        "Set-Cookie": "a=1,b=2"
    }
    assert protocol.diagnose("hi", True) == {
        "message_id": "hi",
        "extension_version": "0.0.7",
        "has_authentication_cookie": True,
        "is_outdated_extension": False,
    }
