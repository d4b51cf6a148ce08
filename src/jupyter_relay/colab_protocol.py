"""Colab's HTTP-over-WebSocket protocol: its messages and versions, without I/O.

Wire-compatible with the `jupyter_http_over_ws` extension, protocol version
0.0.7 (see shared/reference/http-over-websocket.md): one JSON text message a
request; answers in messages tagged with the request's `message_id`, the body
in base64 chunks of at most 64 KiB raw, the last one `done: true`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

VERSION = "0.0.7"
CHUNK = 64 * 1024
REQUIRED = ("message_id", "method", "path")
CLOSE_CODE = 4000  # an application close code: the reference's 400 is not a valid one
_VERSION_RE = re.compile(r"v?(\d+(?:\.\d+)*)(?:[-_.]?(a|alpha|b|beta|rc|c)[-_.]?(\d*))?")
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2}


def parse_version(text: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    """A comparable form of `0.0.7`, `0.0.1a3`, `1.0rc1`; ValueError if it is none of those."""
    match = _VERSION_RE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(text)
    release = tuple(int(part) for part in match.group(1).split("."))
    release = release + (0,) * (3 - len(release)) if len(release) < 3 else release
    while len(release) > 3 and release[-1] == 0:
        release = release[:-1]
    pre = (_PRE_RANK[match.group(2)], int(match.group(3) or 0)) if match.group(2) else (3, 0)
    return release, pre


def version_problem(min_version: str | None) -> str | None:
    """The reason to refuse a socket whose client asks for `min_version`, if any."""
    if min_version is None:
        return None
    try:
        wanted = parse_version(min_version)
    except ValueError:
        return f'Invalid "min_version" provided: {min_version[:60]}'
    if wanted > parse_version(VERSION):
        return (
            f"Requested version ({min_version[:30]}) > Current version ({VERSION}). "
            "Please upgrade this package."
        )
    return None


@dataclass(frozen=True)
class Request:
    message_id: Any
    method: str
    path: str
    body: bytes | None


class BadMessage(Exception):
    """A message that is not a request; `answer` is the error message to send back."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("statusText"))
        self.answer = answer


def parse_request(text: str) -> Request:
    """A request message, or BadMessage with the reference's error answer."""
    try:
        data = json.loads(text)
    except ValueError:
        raise BadMessage(error(None, 400, "JSON input is required.")) from None
    if not isinstance(data, dict):
        raise BadMessage(error(None, 400, "JSON input is required."))
    message_id = data.get("message_id")
    missing = [key for key in REQUIRED if data.get(key) in (None, "")]
    if missing:
        raise BadMessage(
            error(
                message_id,
                400,
                "Invalid request. The body must contain the following fields: "
                + ", ".join(REQUIRED),
            )
        )
    method, path = data["method"], data["path"]
    if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]+", method):
        raise BadMessage(error(message_id, 400, f"Invalid request. Bad method: {method!r}"))
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise BadMessage(
            error(message_id, 400, "Invalid request. The path must be absolute (start with /)")
        )
    body: bytes | None = None
    if data.get("body_base64") is not None:
        try:
            body = base64.b64decode(str(data["body_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise BadMessage(
                error(message_id, 400, "Invalid request. body_base64 is not base64")
            ) from None
    elif data.get("body") is not None:
        body = str(data["body"]).encode()
    return Request(message_id, method.upper(), path, body)


def error(message_id: Any, status: int, status_text: str) -> dict[str, Any]:
    """An error answer; it ends its request (`done`)."""
    out: dict[str, Any] = {"status": status, "statusText": status_text, "done": True}
    if message_id is not None:
        out = {"message_id": message_id, **out}
    return out


def first(
    message_id: Any,
    status: int,
    status_text: str,
    headers: dict[str, str],
    data: bytes,
    done: bool,
) -> dict[str, Any]:
    """The first answer of a response: status line and headers, maybe its first chunk."""
    out: dict[str, Any] = {
        "message_id": message_id,
        "status": status,
        "statusText": status_text,
        "headers": headers,
    }
    if data:
        out["data"] = base64.b64encode(data).decode()
    out["done"] = done
    return out


def chunk(message_id: Any, data: bytes, done: bool) -> dict[str, Any]:
    return {"message_id": message_id, "data": base64.b64encode(data).decode(), "done": done}


def diagnose(text: str, has_cookie: bool, outdated: bool = False) -> dict[str, Any]:
    """The answer to a diagnose message; `outdated` when the client asked for a newer version."""
    return {
        "message_id": text,
        "extension_version": VERSION,
        "has_authentication_cookie": has_cookie,
        "is_outdated_extension": outdated,
    }


def joined_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    """Headers as one object, repeated names comma-joined (as the reference sends them)."""
    out: dict[str, str] = {}
    for name, value in items:
        out[name] = f"{out[name]},{value}" if name in out else value
    return out
