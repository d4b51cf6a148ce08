"""Pure rewriting of what crosses the relay: paths, queries and headers.

Nothing here does I/O; the forwarder calls these on every request, so they
are written to be cheap and are tested with tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

from multidict import CIMultiDict
from yarl import URL

# RFC 9110 7.6.1 hop-by-hop fields, plus the non-standard ones still seen.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# aiohttp's websocket client writes its own handshake fields.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


# What a proxy says about the original request: a client's own values would be believed
# by backends and apps (werkzeug's ProxyFix, Dash), so the relay drops them and writes its own.
CLIENT_FORWARDING = frozenset(
    {
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-context",
        "x-proxycontextpath",
        "x-forwarded-server",
        "x-real-ip",
        "forwarded",
    }
)


# Login cookies of Jupyter backends: jupyter_server's `username-<host>-<port>` and a hub's
# (`jupyterhub-session-id`, `jupyterhub-user-<name>`, ...). The relay sends each backend its
# credentials on every request, so a client never needs these; and they would let whoever
# holds them reach the backend's private port directly.
BACKEND_LOGINS = ("username-", "jupyterhub-")


def upstream_path(raw_path: str, base_path: str) -> str:
    """Map a raw relay path (query excluded) onto a backend with `base_path`.

    Pages served by a backend with a base path refer to it (e.g. a hub's
    `/user/me/`), so a path that already carries the base is kept as it is.
    """
    if base_path == "/" or raw_path.startswith(base_path) or raw_path == base_path[:-1]:
        return raw_path
    return base_path[:-1] + raw_path


def location_base(raw_path: str, base_path: str) -> str:
    """The backend base to take off its redirects: none for a client that asked with it.

    A client at the relay's root (`/api/...`) is answered in those paths; one that
    used the backend's own prefix (pages a hub serves do) keeps it, as it asked.
    """
    return "/" if upstream_path(raw_path, base_path) == raw_path else base_path


def upstream_target(raw_path: str, base_path: str, strip_prefix: str = "") -> str:
    """The path to send upstream: `strip_prefix` taken off (port proxy), else the base mapped."""
    if strip_prefix:
        return raw_after(raw_path, strip_prefix)
    return upstream_path(raw_path, base_path)


def raw_after(raw_path: str, prefix: str) -> str:
    """The client's bytes after the segments that the canonical `prefix` names (at least "/").

    The gate lets no encoded `/` through, so a raw path has the segments of its
    canonical form: a prefix is taken off by counting them, whatever their spelling.
    """
    count = prefix.rstrip("/").count("/")
    parts = raw_path.split("/", count + 1)
    return "/" + parts[count + 1] if len(parts) > count + 1 else "/"


def _param_name(item: str) -> str:
    """A query item's name as a server reads it: `%74oken` and `t%6Fken` are `token`."""
    key = item.partition("=")[0]
    return unquote_plus(key) if "%" in key else key


def strip_query_param(raw_query: str, name: str) -> str:
    """Drop every `name=` item (its name in any spelling) from a raw query, the rest as is."""
    if not raw_query or (name not in raw_query and "%" not in raw_query):
        return raw_query
    kept = [item for item in raw_query.split("&") if _param_name(item) != name]
    return "&".join(kept)


def query_param(raw_query: str, name: str) -> str | None:
    """The first value of `name` (in any spelling) in a raw query string, percent-decoded."""
    if not raw_query or (name not in raw_query and "%" not in raw_query):
        return None
    for item in raw_query.split("&"):
        if _param_name(item) == name:
            return unquote_plus(item.partition("=")[2])
    return None


def is_upgrade(headers: Mapping[str, str]) -> bool:
    """A websocket upgrade: `Upgrade: websocket` with `upgrade` among `Connection`'s tokens.

    `headers` must look names up case-insensitively (aiohttp's and multidict's do).
    """
    return headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in {
        token.strip().lower() for token in headers.get("Connection", "").split(",")
    }


def page_to_scrub(content_type: str, content_encoding: str | None) -> bool:
    """A page a backend may have printed its token into, readable as it is (not compressed)."""
    return content_type.split(";")[0].strip().lower() == "text/html" and not content_encoding


def _connection_tokens(items: list[tuple[str, str]]) -> set[str]:
    """Field names a message's `Connection` header lists: hop-by-hop for that message."""
    return {
        part.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for part in value.split(",")
    }


def remove_cookie(cookie_header: str, name: str) -> str:
    """Drop one cookie from a `Cookie` request header."""
    parts = [p for p in cookie_header.split(";") if p.strip().split("=", 1)[0] != name]
    return ";".join(parts).strip()


def request_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    client_ip: str,
    scheme: str,
    host: str,
    backend_origin: str,
    relay_cookie: str,
    credentials: Iterable[tuple[str, str]],
    websocket: bool = False,
) -> CIMultiDict[str]:
    """Headers to send to a backend for a client's request.

    Removes hop-by-hop fields and the relay's own credentials (its
    `Authorization`, `token` header and cookie) and what a client claims of the original
    request (`Forwarded`, `X-Real-IP`, `X-Forwarded-*`), adds the backend's credentials
    (a port-proxy app's prefix headers among them) and the `X-Forwarded-*` trio, and
    rewrites `Origin`/`Referer` to the backend's origin: the relay has checked the
    client's origin already, and Jupyter compares `Origin` with its own `Host`.
    """
    items = list(incoming)
    connection = _connection_tokens(items)
    # `token` is the Go mixer's spelling of the relay's credential (see auth.gather).
    drop = HOP_BY_HOP | connection | {"host", "authorization", "token"}
    if websocket:
        drop = drop | WEBSOCKET_HANDSHAKE
    out: CIMultiDict[str] = CIMultiDict()
    forwarded_for = ""
    for key, value in items:
        lower = key.lower()
        if lower in drop:
            continue
        if lower == "cookie":
            value = remove_cookie(value, relay_cookie)
            if not value:
                continue
        elif lower == "origin":
            value = backend_origin
        elif lower == "referer":
            value = _rebase_referer(value, backend_origin)
        elif lower == "x-forwarded-for":
            forwarded_for = value
            continue
        elif lower in CLIENT_FORWARDING:
            continue
        out.add(key, value)
    out["X-Forwarded-For"] = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = host
    for key, value in credentials:
        out[key] = value
    return out


def _rebase_referer(referer: str, backend_origin: str) -> str:
    """The backend's origin in place of the relay's, and the relay's `?token=` taken out.

    A page first opened as `/proxy/8050/?token=...` sends that address as the Referer
    of everything it loads; the token is the relay's, never the backend's.
    """
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*", referer)
    rest = referer[match.end() :] if match else referer
    path, mark, query = rest.partition("?")
    if mark:
        query, hash_mark, fragment = query.partition("#")
        query = strip_query_param(query, "token")
        rest = path + ("?" + query if query else "") + hash_mark + fragment
    return backend_origin + rest if match else rest


def response_headers(
    upstream: Iterable[tuple[str, str]],
    *,
    backend_origins: frozenset[str],
    relay_is_https: bool,
    location_prefix: str = "",
    relay_cookie: str = "",
    cookie_scope: str = "",
    cookie_relative: bool = False,
    base_path: str = "/",
) -> CIMultiDict[str]:
    """Headers to send to the client for a backend's response.

    Removes hop-by-hop fields, turns absolute `Location`s that point at the
    backend into paths on the relay (under `location_prefix`, given for the
    redirects of an app whose prefix the relay strips), and makes cookies fit the relay: no
    `Domain` (the browser talks to the relay's host), `Path=/` where the
    backend used its base path (or, for a port-proxy app, a path inside its
    `cookie_scope`), no `Secure` when the relay is plain HTTP on loopback (a
    browser would drop the cookie), and none at all named `relay_cookie`, nor a Jupyter
    backend's login cookies (`BACKEND_LOGINS`). A backend's CORS fields are dropped:
    which origins may read an answer is the relay's to say (`cors.py`).
    """
    items = list(upstream)
    connection = _connection_tokens(items)
    drop = HOP_BY_HOP | connection
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in items:
        lower = key.lower()
        if lower in drop or lower.startswith("access-control-"):
            continue
        if lower == "location":
            value = rewrite_location(value, backend_origins, base_path)
            if (
                location_prefix
                and value.startswith("/")
                and not value.startswith("//")
                and not _under(value, location_prefix)
            ):
                # An app that read X-Forwarded-Prefix already wrote the relay's path.
                value = location_prefix + value
        elif lower == "set-cookie":
            name = cookie_name_of(value)
            if relay_cookie and name == relay_cookie:
                continue  # it would replace (or delete) the relay's own login
            if not cookie_scope and name.startswith(BACKEND_LOGINS):
                continue  # a backend's login: the relay logs in for the client
            value = rewrite_set_cookie(
                value, relay_is_https=relay_is_https, scope=cookie_scope, relative=cookie_relative
            )
        out.add(key, value)
    return out


def _under(path: str, prefix: str) -> bool:
    """Is `path` (query and fragment allowed) `prefix` itself or below it?"""
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix) :]
    return not rest or rest[0] in "/?#"


def cookie_name_of(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[0].strip()


def rewrite_location(location: str, backend_origins: frozenset[str], base_path: str = "/") -> str:
    """Make a redirect to the backend's own origin stay on the relay, in the relay's paths.

    A backend at `/base/` says `/base/api/contents/x`; the relay's client knows that
    as `/api/contents/x` (the relay puts the base back on the way up).
    """
    if "://" in location[:12]:
        location = _own_path(location, backend_origins)
    if base_path != "/" and location.startswith(base_path):
        return "/" + location[len(base_path) :]
    return location


def _own_path(location: str, backend_origins: frozenset[str]) -> str:
    """An absolute URL on the backend's origin as a path; any other URL as it is."""
    try:
        url = URL(location, encoded=True)
        if not url.is_absolute() or str(url.origin()).lower() not in backend_origins:
            return location
    except ValueError:  # yarl validates lazily: a bad port shows up here
        return location
    rest = url.raw_path_qs or "/"
    if url.raw_fragment:
        rest += "#" + url.raw_fragment
    return rest


def rewrite_set_cookie(
    value: str, *, relay_is_https: bool, scope: str = "", relative: bool = False
) -> str:
    """Adapt one `Set-Cookie` value to the relay's origin.

    `scope` is a port-proxy app's prefix (`/proxy/8050`): its cookies stay under it,
    so an app cannot set cookies for the relay's other paths (or for other apps).
    A relative app's `Path=/x` means `<scope>/x`; an absolute app sees the relay's
    paths, so its path is kept when it is inside the scope. Without a scope (a
    Jupyter backend) the path becomes `/`, as before.
    """
    parts = [p.strip() for p in value.split(";")]
    out = [parts[0]]
    for attr in parts[1:]:
        name = attr.split("=", 1)[0].strip().lower()
        if name == "domain":
            continue
        if name == "path":
            out.append("Path=" + _cookie_path(attr.split("=", 1)[-1].strip(), scope, relative))
            continue
        if name == "secure" and not relay_is_https:
            continue
        if (
            name == "samesite"
            and attr.split("=", 1)[-1].strip().lower() == "none"
            and (not relay_is_https)
        ):
            # SameSite=None requires Secure; without it the browser drops the cookie.
            out.append("SameSite=Lax")
            continue
        out.append(attr)
    return "; ".join(out)


def _cookie_path(path: str, scope: str, relative: bool) -> str:
    if not scope:
        return "/"
    if not path.startswith("/"):  # the browser would use the request's directory
        return scope + "/"
    if relative:
        return scope + path
    return path if _under(path, scope) else scope + "/"
