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
from urllib.parse import quote

VERSION = "0.0.7"
BRIDGE_PREFIX = "/http_over_websocket"
# Colab's page cannot send the relay's cookie or a header: the URL the user pasted rides here.
AUTH_URL_PARAM = "jupyter_http_over_ws_auth_url"
CHUNK = 64 * 1024
REQUIRED = ("message_id", "method", "path")
CLOSE_CODE = 4000  # an application close code: the reference's 400 is not a valid one
# The grammar of distutils' StrictVersion, which the reference parses `min_version` with:
# "1.2", "1.2.3", "0.0.1a3", "1.0b2"; anything else is unparseable there and here.
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?:([ab])([0-9]+))?")
Version = tuple[tuple[int, int, int], tuple[str, int]]


def parse_version(text: str) -> Version:
    """A comparable form of `0.0.7`, `0.0.1a3`; ValueError if StrictVersion would refuse it."""
    match = _VERSION_RE.fullmatch(text)
    if not match:
        raise ValueError(text)
    major, minor, patch, letter, number = match.groups()
    release = (int(major), int(minor), int(patch or 0))
    # A release sorts after its pre-releases ("~" > "a", "b").
    pre = (letter, int(number)) if letter else ("~", 0)
    return release, pre


def show_version(version: Version) -> str:
    """A version as StrictVersion prints it (no `.0` patch: 1.0.0 is "1.0")."""
    (major, minor, patch), (letter, number) = version
    text = f"{major}.{minor}" + (f".{patch}" if patch else "")
    return text + (f"{letter}{number}" if letter != "~" else "")


def version_problem(min_version: str | None) -> str | None:
    """The reason to refuse a socket whose client asks for `min_version`, if any.

    The words are the reference's; the version it names is cut so that the reason
    fits a close frame (123 bytes).
    """
    if min_version is None:
        return None
    min_version = min_version.strip()  # as tornado's get_argument gives it the reference
    try:
        wanted = parse_version(min_version)
    except ValueError:
        return f'Invalid "min_version" provided: {min_version[:60]}'
    if wanted > parse_version(VERSION):
        return (
            f"Requested version ({show_version(wanted)[:30]}) > Current version ({VERSION}). "
            "Please upgrade this package."
        )
    return None


def is_outdated(min_version: str | None) -> bool:
    """True when the client wants a newer protocol than this one (not when it is garbled)."""
    if min_version is None:
        return False
    try:
        return parse_version(min_version.strip()) > parse_version(VERSION)
    except ValueError:
        return False


def close_reason(text: str) -> bytes:
    """`text` as a close frame's reason: at most 123 bytes, cut between characters."""
    return text.encode()[:123].decode(errors="ignore").encode()


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


def parse_request(text: str | bytes) -> Request:
    """A request message, or BadMessage with the reference's error answer.

    A binary frame counts as its UTF-8 text, as in the reference (json.loads of bytes).
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
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
    if _UNSENDABLE.search(path):
        raise BadMessage(
            error(
                message_id,
                400,
                "Invalid request. The path has a space or control character: percent-encode it",
            )
        )
    path = quote(path, safe=_PRINTABLE)  # non-ASCII as UTF-8 percent-escapes, the rest as sent
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


def message_id_of(text: str | bytes) -> Any:
    """The `message_id` of a message refused before parsing (too large), if it has one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data.get("message_id") if isinstance(data, dict) else None


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
