"""Who may use the relay: the token, its cookie, and the Origin check.

The token is needed on every method and every websocket upgrade. It may come
as `?token=` (then a cookie, so it leaves the address bar), as
`Authorization: token ...`/`Bearer ...`, or as that cookie. The cookie holds
an HMAC of the token, not the token. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum
from typing import NamedTuple

from yarl import URL

from .headers import query_param

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Verdict(Enum):
    MISSING = "missing"
    WRONG = "wrong"
    OK = "ok"


class Credentials(NamedTuple):
    """What a request offers, gathered from its query, header and cookie (on every request)."""

    query: str | None
    header: str | None
    header_malformed: bool
    cookie: str | None


def parse_authorization(value: str | None) -> tuple[str | None, bool]:
    """Return (token, malformed) for an `Authorization` header value."""
    if value is None:
        return None, False
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and token.strip():
        return token.strip(), False
    return None, True


def cookie_from_header(header: str | None, name: str) -> str | None:
    """The value of one cookie in a `Cookie` request header."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return None


def cookie_name(port: int) -> str:
    """Per-port name: cookies ignore ports, two relays on one host must not collide."""
    return f"jupyter-relay-{port}"


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"jupyter-relay cookie v1", hashlib.sha256).hexdigest()


def gather(
    query_string: str,
    authorization: str | None,
    cookie_header: str | None,
    cookie: str,
    token_header: str | None = None,
) -> Credentials:
    """What a request offers: `?token=`, the `Authorization` header, the relay's cookie.

    A header literally named `token` counts when `Authorization` carries no
    token: the Go kernels mixer took its token that way, and its users' front
    servers (`--GatewayClient.headers='{"token": ...}'`) still send it, next to
    the empty `Authorization: token ` that Jupyter's GatewayClient always adds.
    """
    header, malformed = parse_authorization(authorization)
    if header is None and token_header is not None and token_header.strip():
        header, malformed = token_header.strip(), False
    return Credentials(
        query=query_param(query_string, "token") if query_string else None,
        header=header,
        header_malformed=malformed,
        cookie=cookie_from_header(cookie_header, cookie),
    )


def same_origin_url(url: str, scheme: str, host: str | None) -> bool:
    """True when `url` names the origin a request came to (scheme, host and port as sent)."""
    if host is None:
        return False
    try:
        parsed = URL(url)
    except ValueError:
        return False
    return parsed.is_absolute() and parsed.scheme == scheme and _authority(parsed) == host.lower()


def token_from_auth_url(auth_url: str | None, scheme: str, host: str | None) -> str | None:
    """The `?token=` of Colab's `jupyter_http_over_ws_auth_url`, if that URL is this relay's.

    Colab's page cannot send the relay's cookie or headers on its websockets; the
    URL the user pasted (with `?token=`) rides in that parameter instead. It counts
    only when it names the origin the websocket came to, and it is never fetched.
    """
    if not auth_url or not same_origin_url(auth_url, scheme, host):
        return None
    return query_param(URL(auth_url).raw_query_string, "token")


def is_navigation(
    method: str, websocket: bool, sec_fetch_mode: str | None, accept: str | None
) -> bool:
    """A browser loading a page (not a script's fetch): it may be redirected."""
    if method != "GET" or websocket:
        return False
    if sec_fetch_mode is not None:
        return sec_fetch_mode == "navigate"
    return "text/html" in (accept or "")


def check(token: str, creds: Credentials) -> Verdict:
    """Decide whether the offered credentials carry the relay's token.

    Any one valid credential is enough: JupyterLab pages may send a stale
    token in a header while the cookie is good.
    """
    expected = token.encode()
    offered = False
    for candidate in (creds.query, creds.header):
        if candidate is not None:
            offered = True
            if hmac.compare_digest(candidate.encode(), expected):
                return Verdict.OK
    if creds.cookie is not None:
        offered = True
        if hmac.compare_digest(creds.cookie.encode(), cookie_value(token).encode()):
            return Verdict.OK
    if creds.header_malformed:
        offered = True
    return Verdict.WRONG if offered else Verdict.MISSING


def origin_allowed(
    origin: str | None, host: str | None, scheme: str, allowlist: tuple[str, ...]
) -> bool:
    """Same origin as the relay itself, or in the allowlist; no Origin is a script.

    `Origin: null` (sandboxed frames, file:// pages) is never allowed.
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in allowlist:
        return True
    if host is None:
        return False
    try:
        url = URL(origin)
    except ValueError:
        return False
    if not url.is_absolute() or url.scheme not in ("http", "https"):
        return False
    return url.scheme == scheme and _authority(url) == host.lower()


def _authority(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port is not None:
        return f"{host}:{url.explicit_port}"
    return host


def needs_origin_check(method: str, is_upgrade: bool) -> bool:
    return is_upgrade or method.upper() not in SAFE_METHODS
