"""HTTP answers for errors, in one place.

API paths (and clients that ask for JSON) get Jupyter's JSON error shape,
`{"message": ..., "reason": ...}`; a browser asking for a page gets a small
HTML page in which everything echoed is escaped. `render_error` is pure and
serves both the aiohttp path and the fast path.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from aiohttp import web

from .errors import (
    BackendAuthError,
    BackendBadAnswer,
    BackendError,
    BackendNotFound,
    BackendStartError,
    BackendTimeout,
    BackendTLSError,
    BackendUnreachable,
    ConfigError,
    Forbidden,
    NotFound,
    RelayError,
)

# The one mapping from the relay's errors to HTTP answers: (status, reason). An error's
# class is looked up, then its bases; `RelayError.reason`, when set, words the reason.
ANSWERS: dict[type[RelayError], tuple[int, str]] = {
    ConfigError: (400, "Bad Configuration"),
    NotFound: (404, "Not Found"),
    Forbidden: (403, "Forbidden"),
    BackendUnreachable: (502, "Backend Unreachable"),
    BackendTLSError: (502, "Backend TLS Verification Failed"),
    BackendTimeout: (504, "Backend Timeout"),
    BackendAuthError: (502, "Backend Refused Credentials"),
    BackendStartError: (503, "Backend Not Started"),
    BackendBadAnswer: (502, "Invalid Backend Answer"),
    BackendNotFound: (404, "Not Found"),
    BackendError: (502, "Bad Gateway"),
    RelayError: (500, "Relay Error"),
}


def answer_of(error: RelayError) -> tuple[int, str]:
    """The HTTP status and reason for `error`."""
    for kind in type(error).__mro__:
        if kind in ANSWERS:
            status, reason = ANSWERS[kind]
            return status, error.reason or reason
    raise AssertionError(f"{type(error).__name__} is no RelayError")


def wants_json(path: str, method: str, accept: str) -> bool:
    if path.startswith(("/api/", "/relay/api/")) or path in ("/api", "/relay/api"):
        return True
    if "text/html" in accept:
        return False
    return "json" in accept or method != "GET" or not accept


def render_error(
    path: str, method: str, accept: str, status: int, message: str, reason: str
) -> tuple[str, bytes]:
    """Return (content type, body) for an error answer."""
    if wants_json(path, method, accept):
        return "application/json", json.dumps({"message": message, "reason": reason}).encode()
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{status} {html.escape(reason)}</title></head>\n"
        f"<body><h1>{status} {html.escape(reason)}</h1>\n"
        f"<p>{html.escape(message)}</p>\n<p><small>jupyter-relay</small></p></body></html>\n"
    )
    return "text/html; charset=utf-8", page.encode()


# What jupyter_server sends on its own answers (`frame-ancestors 'self'`; API answers also
# `default-src 'none'`), on every answer the relay builds itself.
CSP_PAGE = "frame-ancestors 'self'; report-uri /api/security/csp-report"
CSP_API = CSP_PAGE + "; default-src 'none'"


def security_headers(content_type: str) -> dict[str, str]:
    """Headers every answer the relay composes carries: no framing elsewhere, no sniffing."""
    page = content_type.startswith("text/html")
    return {
        "Content-Security-Policy": CSP_PAGE if page else CSP_API,
        "X-Content-Type-Options": "nosniff",
    }


def error_bytes(
    path: str,
    method: str,
    accept: str,
    status: int,
    message: str,
    reason: str,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A whole error answer on the wire, closing the connection (for the fast path)."""
    content_type, body = render_error(path, method, accept, status, message, reason)
    fields = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **security_headers(content_type),
        **(headers or {}),
        "Connection": "close",
    }
    head = wire_head(f"HTTP/1.1 {status} {reason}", fields.items())
    return head + (b"" if method == "HEAD" else body)


def wire_head(first_line: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """A message head on the wire: its first line, its fields, the blank line."""
    lines = [first_line, *(f"{k}: {v}" for k, v in fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def websocket_refusal(backend: str, status: int) -> tuple[int, str, str]:
    """(status, message, reason) when a backend answers an upgrade with something else.

    The backend's own answer is not passed on: it may be a page with its token in it.
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    shown = status if status >= 400 else 502
    message = f"backend '{backend}' refused the websocket: {status} {phrase}"
    return shown, message, "Websocket Refused"


def error_response(
    request: web.BaseRequest,
    status: int,
    message: str,
    reason: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Build the answer for a failure; `message` says what to do."""
    content_type, body = render_error(
        request.path, request.method, request.headers.get("Accept", ""), status, message, reason
    )
    extra = dict(headers or {})
    extra["Cache-Control"] = "no-store"
    extra["Content-Type"] = content_type
    extra.update(security_headers(content_type))
    return web.Response(status=status, body=body, headers=extra)


def relay_error_response(request: web.BaseRequest, exc: RelayError) -> web.Response:
    status, reason = answer_of(exc)
    return error_response(request, status, exc.message, reason)


def relay_error_bytes(
    path: str,
    method: str,
    accept: str,
    exc: RelayError,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The error answer on the wire for the engine (JSON or an escaped page)."""
    status, reason = answer_of(exc)
    return error_bytes(path, method, accept, status, exc.message, reason, headers)
