"""The one gate every request and upgrade passes, decided on one view of its path.

Both engines call `decide` with what they parsed of a request head and do
what it says: pass it on, refuse it (status and words), or redirect a browser
that brought `?token=` in its address. Nothing is dialled before it passes.

The decision is made on the request's canonical path: its segments
percent-decoded once. A path whose decoding would change its structure
(an encoded `/` or backslash, a `.` or `..` segment, a control character, a
broken escape) is refused before anything else, so the exemption, the router
and the backend can never read one path in different ways. Routing uses the
canonical path; forwarding sends the client's bytes, which decode to it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple
from urllib.parse import unquote

from . import auth, cors
from .colab_protocol import AUTH_URL_PARAM, BRIDGE_PREFIX
from .headers import query_param, strip_query_param

HEALTH = "/relay/healthz"
METRICS = "/relay/metrics"  # open without the token with --metrics-public
# One bound on a request head (request line and fields), on every engine: 431 beyond it.
HEAD_LIMIT = 64 * 1024
# As jupyter_server's `local_hostnames`: names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost"})
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What makes a path need a closer look: an escape, a backslash, a control, a dot segment.
_SUSPECT = re.compile(r"[%\\\x00-\x1f\x7f]|/\.\.?(?:/|$)")


class Outcome(Enum):
    PASS = "pass"  # noqa: S105 (not a password)
    REFUSE = "refuse"
    REDIRECT = "redirect"
    PREFLIGHT = "preflight"  # a CORS preflight of an allowed origin: the relay answers it


class BadPath(ValueError):
    """A request path that could be read in two ways; the message says which part."""


@dataclass(frozen=True)
class Policy:
    """What the gate enforces, from the relay's configuration."""

    token: str | None  # None: --no-auth
    cookie_name: str
    allow_origins: tuple[str, ...] = ()
    allowed_hosts: frozenset[str] | None = frozenset()  # None: any Host (not on loopback)
    token_hint: str = ""  # where the token comes from, for the refusals' words
    metrics_public: bool = False  # /relay/metrics without the token (for a scraper)


class Decision(NamedTuple):  # a tuple: made on every request, and cheap to make
    outcome: Outcome
    path: str = ""  # canonical
    raw_path: str = ""
    query: str = ""
    status: int = 0
    message: str = ""
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # REFUSE, PREFLIGHT: to add to the answer
    location: str = ""  # REDIRECT: where to, the cookie set on the way


def canonical_path(raw_path: str) -> str:
    """The path with each segment percent-decoded once; `BadPath` if that is ambiguous.

    Past a port-proxy or app prefix spelled as is (`/proxy/<port>/`, `/apps/<name>/`),
    the path is the app's, passed on byte for byte and routed by nothing: there an
    encoded `/` or backslash stays encoded (apps' REST APIs use `%2F` in names).
    """
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        raise BadPath("the request target must be a path starting with a single /")
    if not _SUSPECT.search(raw_path):
        return raw_path  # nothing to decode, no dot segment: most requests
    if "\\" in raw_path:
        raise BadPath("backslashes are not allowed in paths")
    if _ESCAPE.search(raw_path):
        raise BadPath("a % in the path is not followed by two hex digits (write it as %25)")
    opaque = _OPAQUE.match(raw_path)
    end = opaque.end() if opaque else len(raw_path)
    decoded = []
    start = 1  # where the segment begins in the raw path
    for segment in raw_path.split("/")[1:]:
        apps = opaque is not None and start >= end
        start += len(segment) + 1
        text = _decode(segment, strict=not apps)
        if "/" in text or "\\" in text:
            if not apps:
                raise BadPath(
                    "encoded slashes or backslashes (%2F, %5C) are not allowed in paths "
                    "(past /proxy/<port>/ they are: there the path is the app's)"
                )
            text = _decode(_KEEP_SEPARATORS.sub(_escape_separator, segment), strict=False)
        if text in (".", ".."):
            raise BadPath("'.' and '..' segments are not allowed in paths")
        if _CONTROL.search(text):
            raise BadPath("control characters (such as %00) are not allowed in paths")
        decoded.append(text)
    return "/" + "/".join(decoded)


# A port-proxy or app prefix, as the relay's own routes spell it.
_OPAQUE = re.compile(r"/(?:proxy/(?:absolute/)?[^/%]+|apps/[^/%]+)/")
_KEEP_SEPARATORS = re.compile(r"%(2[Ff]|5[Cc])")


def _escape_separator(match: re.Match[str]) -> str:
    return "%25" + match.group(1).upper()  # decodes to the escape itself: kept encoded


def _decode(segment: str, strict: bool) -> str:
    if "%" not in segment:
        return segment
    try:
        return unquote(segment, errors="strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise BadPath("the path's percent-escapes are not UTF-8") from exc


def host_name(host: str) -> str:
    """The name or address of a `Host` value: port, brackets and a final dot taken off."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)  # a relay sees a handful of Host values, on every request
def host_allowed(host: str | None, allowed: frozenset[str] | None) -> bool:
    """A loopback name or address, or one allowed by name (DNS rebinding guard)."""
    if allowed is None or not host or "*" in allowed:
        return True
    name = host_name(host)
    if name in allowed or name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_bridge(path: str) -> bool:
    """Colab's bridge endpoints, where `jupyter_http_over_ws_auth_url` may carry the token."""
    return path in (BRIDGE_PREFIX, BRIDGE_PREFIX + "/diagnose") or path.startswith(
        BRIDGE_PREFIX + "/proxied_ws/"
    )


HOW = (
    "Open the URL that jupyter-relay printed when it started (it ends in ?token=...), "
    "or send the header 'Authorization: token <relay token>'."
)


def decide(
    policy: Policy,
    method: str,
    target: str,
    headers: Mapping[str, str],
    *,
    scheme: str = "http",
    websocket: bool = False,
    head_size: int = 0,
) -> Decision:
    """Pass, refuse or redirect one request; `headers` maps lower-case names to first values."""
    raw_path, _, query = target.partition("?")
    if head_size > HEAD_LIMIT:
        return head_too_large()
    try:
        path = canonical_path(raw_path)
    except BadPath as exc:
        return _refuse(
            raw_path, 400, f"{exc}; this relay reads each path in one way only", "Bad Request"
        )
    host = headers.get("host")
    if not host_allowed(host, policy.allowed_hosts):
        name = host_name(host or "")
        return _refuse(
            raw_path,
            403,
            f"requests for the host {name!r} are refused: this relay listens on loopback and "
            "answers only to loopback names (localhost, 127.0.0.1, [::1]), which keeps web "
            "pages that rebind a name of theirs to this machine out. If you reach the relay "
            f"through a proxy of your own under that name, start it with --allow-host {name}",
            "Host Not Allowed",
        )
    if (
        (path == HEALTH or (path == METRICS and policy.metrics_public))
        and method in ("GET", "HEAD")
        and not websocket
    ):
        return Decision(Outcome.PASS, path, raw_path, query)
    if cors.is_preflight(method, headers):
        # A browser's question before a cross-origin call; it carries no credentials.
        asking = headers["origin"]
        if cors.allowed(asking, policy.allow_origins):
            fields = cors.preflight_headers(asking, headers)
            return Decision(Outcome.PREFLIGHT, path, raw_path, query, 204, headers=fields)
        return _refuse(
            raw_path,
            403,
            f"cross-origin requests from {asking} are not allowed. If you trust it, start "
            f"jupyter-relay with --allow-origin {asking}",
            "Origin Not Allowed",
        )
    creds = auth.gather(
        query,
        headers.get("authorization"),
        headers.get("cookie"),
        policy.cookie_name,
        headers.get("token"),
    )
    if query and creds.query is None and is_bridge(path):
        offered = auth.token_from_auth_url(query_param(query, AUTH_URL_PARAM), scheme, host)
        creds = auth.Credentials(offered, creds.header, creds.header_malformed, creds.cookie)
    if policy.token is not None:
        verdict = auth.check(policy.token, creds)
        if verdict is auth.Verdict.MISSING:
            # 403 as jupyter_server answers (clients and their test suites expect it);
            # WWW-Authenticate still says what is wanted.
            return _refuse(
                raw_path,
                403,
                f"This jupyter-relay needs its token. {HOW}{policy.token_hint}",
                "Token Required",
                {"WWW-Authenticate": 'token realm="jupyter-relay"'},
            )
        if verdict is auth.Verdict.WRONG:
            return _refuse(
                raw_path,
                403,
                f"The token is not this relay's. {HOW}{policy.token_hint}",
                "Invalid Token",
            )
    if auth.needs_origin_check(method, websocket):
        origin = headers.get("origin")
        if not auth.origin_allowed(origin, host, scheme, policy.allow_origins):
            return _refuse(
                raw_path,
                403,
                f"requests from the origin {origin} are not allowed. If you trust it, "
                f"start jupyter-relay with --allow-origin {origin}",
                "Origin Not Allowed",
            )
    navigation = auth.is_navigation(
        method, websocket, headers.get("sec-fetch-mode"), headers.get("accept")
    )
    if policy.token is not None and creds.query is not None and navigation:
        # Take the token out of the address bar: the cookie carries it from now on.
        rest = strip_query_param(query, "token")
        location = f"{raw_path}?{rest}" if rest else raw_path
        return Decision(Outcome.REDIRECT, path, raw_path, query, status=302, location=location)
    return Decision(Outcome.PASS, path, raw_path, query)


def head_too_large() -> Decision:
    return _refuse(
        "/",
        431,
        f"the request head is larger than the {HEAD_LIMIT} bytes this relay takes; send fewer "
        "or shorter header fields (large cookies of other sites on this host are a common cause)",
        "Request Header Fields Too Large",
    )


def _refuse(
    raw_path: str, status: int, message: str, reason: str, headers: Mapping[str, str] | None = None
) -> Decision:
    """A refusal; its `raw_path` only chooses between a JSON and a page answer."""
    return Decision(
        Outcome.REFUSE,
        raw_path=raw_path,
        status=status,
        message=message,
        reason=reason,
        headers=tuple((headers or {}).items()),
    )
