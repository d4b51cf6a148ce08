"""Cross-origin answers for the origins the relay allows (`--allow-origin`, `--colab`).

A page on an allowed origin (Colab's "Connect to a local runtime" calls the
REST API directly since 2025) may read every answer, errors included: each
carries `Access-Control-Allow-Origin: <its origin>`, `Allow-Credentials`,
`Vary: Origin` and the headers a Jupyter client reads. A backend's own CORS
headers are replaced by these, never doubled. A preflight (`OPTIONS` with
`Access-Control-Request-Method`, which carries no credentials) is answered by
the relay itself, never by a backend. An origin not allowed gets none of it.
Websockets are not subject to CORS: the gate checks their Origin. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# Always allowed, whatever the preflight asks: what Jupyter clients send.
BASE_HEADERS = ("Authorization", "Content-Type", "X-XSRFToken", "X-Requested-With")
EXPOSE = "Location, Content-Disposition, Last-Modified, ETag, Content-Length, Date, Server"
MAX_AGE = "7200"  # Chromium's own cap; a page connects again without asking every time
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MAX_ASKED = 32  # header names a preflight may ask for


def allowed(origin: str | None, allow_origins: tuple[str, ...]) -> bool:
    """An Origin the relay answers cross-origin: one named by --allow-origin (or --colab)."""
    return origin is not None and origin.strip().lower() in allow_origins


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A CORS preflight: `OPTIONS` with an Origin and `Access-Control-Request-Method`."""
    return (
        method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
    )


def answer_headers(origin: str) -> tuple[tuple[str, str], ...]:
    """The fields every answer to an allowed origin carries."""
    return (
        ("Access-Control-Allow-Origin", origin.strip()),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", EXPOSE),
        ("Vary", "Origin"),
    )


def preflight_headers(origin: str, headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The answer to an allowed origin's preflight: what it may send, and for how long."""
    asked = [
        name.strip()
        for name in headers.get("access-control-request-headers", "").split(",")
        if _TOKEN.fullmatch(name.strip())
    ][:MAX_ASKED]
    names: dict[str, str] = {}
    for name in (*BASE_HEADERS, *asked):
        names.setdefault(name.lower(), name)
    fields = [
        *answer_headers(origin),
        ("Access-Control-Allow-Methods", METHODS),
        ("Access-Control-Allow-Headers", ", ".join(names.values())),
        ("Access-Control-Max-Age", MAX_AGE),
    ]
    if headers.get("access-control-request-private-network", "").lower() == "true":
        fields.append(("Access-Control-Allow-Private-Network", "true"))  # Chrome's PNA
    return tuple(fields)


def without_cors(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A backend's answer fields without its own CORS fields (the relay's replace them)."""
    return [(k, v) for k, v in items if not k.lower().startswith("access-control-")]
