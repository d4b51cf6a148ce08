"""HTTP answers for errors, in one place.

API paths (and clients that ask for JSON) get Jupyter's JSON error shape,
`{"message": ..., "reason": ...}`; a browser asking for a page gets a small
HTML page in which everything echoed is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from aiohttp import web

from .errors import RelayError


def wants_json(request: web.BaseRequest) -> bool:
    path = request.path
    if path.startswith(("/api/", "/relay/api/")) or path in ("/api", "/relay/api"):
        return True
    accept = request.headers.get("Accept", "")
    if "text/html" in accept:
        return False
    return "json" in accept or request.method != "GET" or not accept


def error_response(
    request: web.BaseRequest,
    status: int,
    message: str,
    reason: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Build the answer for a failure; `message` says what to do."""
    extra = dict(headers or {})
    extra["Cache-Control"] = "no-store"
    if wants_json(request):
        body = json.dumps({"message": message, "reason": reason})
        return web.Response(
            status=status, text=body, content_type="application/json", headers=extra
        )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{status} {html.escape(reason)}</title></head>\n"
        f"<body><h1>{status} {html.escape(reason)}</h1>\n"
        f"<p>{html.escape(message)}</p>\n<p><small>jupyter-relay</small></p></body></html>\n"
    )
    extra["X-Content-Type-Options"] = "nosniff"
    return web.Response(status=status, text=page, content_type="text/html", headers=extra)


def relay_error_response(request: web.BaseRequest, exc: RelayError) -> web.Response:
    return error_response(request, exc.status, exc.message, exc.reason)
