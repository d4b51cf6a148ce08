"""HTTP answers for errors, in one place.

API paths (and clients that ask for JSON) get Jupyter's JSON error shape,
`{"message": ..., "reason": ...}`; a browser asking for a page gets a small
HTML page in which everything echoed is escaped. `render_error` is pure and
serves both the aiohttp path and the fast path.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from aiohttp import web

from .errors import RelayError


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
    if content_type.startswith("text/html"):
        extra["X-Content-Type-Options"] = "nosniff"
    return web.Response(status=status, body=body, headers=extra)


def relay_error_response(request: web.BaseRequest, exc: RelayError) -> web.Response:
    return error_response(request, exc.status, exc.message, exc.reason)
