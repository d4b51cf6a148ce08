"""The relay's URL space, declared once.

Each row says which part of the relay serves a path: the relay's own
answers (its `/relay/` pages, the mixer's merged JSON, the Colab bridge),
which aiohttp composes, or a forwarding road the engine takes (a kernel's
websocket to its owner, a kernelspec's files to the backend that has it, the
port proxy, the apps, and everything else to the primary). The engine
classifies every request with `classify`; the aiohttp application adds a
route for each row that names a handler. Templates use aiohttp's syntax, so
both read the same rows the same way. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .colab_protocol import BRIDGE_PREFIX

if TYPE_CHECKING:
    from .backends.base import Target


class Road(enum.Enum):
    """Who serves a path."""

    # Members are singletons: hashed by identity, in C. Enum's own hash is a Python call,
    # and the engine counts every answer in a dict keyed by its road (`metrics.Meter`).
    __hash__ = object.__hash__

    HOUSE = "the relay's own answer"  # aiohttp: pages, merged JSON, the bridge
    KERNEL = "a kernel's owner"  # /api/kernels/<id>/channels
    KERNELSPEC_FILE = "the kernelspec's backend"  # /kernelspecs/<name>/<file>
    PORT = "the port proxy"  # /proxy/...
    APP = "a named app"  # /apps/...
    HOME = "the primary's start page"  # / : JupyterLab where the primary serves it
    PRIMARY = "the primary backend"  # everything else


_PARAM = re.compile(r"\{(\w+)(?::([^{}]*))?\}")


def _compile(template: str) -> re.Pattern[str]:
    """aiohttp's template syntax as a regex: `{name}` is one segment, `{name:re}` is `re`."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^{}/]+'})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Row:
    template: str
    road: Road
    handler: str = ""  # the house's handler for it (aiohttp route); "" when forwarded
    methods: str = "*"  # for the aiohttp route
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _compile(self.template))


TABLE: tuple[Row, ...] = (
    Row("/relay/healthz", Road.HOUSE, "healthz", "GET"),
    Row("/relay/api/status", Road.HOUSE, "status", "GET"),
    Row("/relay/", Road.HOUSE, "status_page", "GET"),
    Row("/relay/static/{name}", Road.HOUSE, "status_static", "GET"),
    Row("/relay/metrics", Road.HOUSE, "metrics", "GET"),
    Row("/relay", Road.HOUSE, "relay_redirect"),
    Row("/relay/{tail:.*}", Road.HOUSE, "relay_not_found"),
    Row("/api/kernelspecs", Road.HOUSE, "specs"),
    Row("/api/kernelspecs/{name}", Road.HOUSE, "spec"),
    Row("/kernelspecs/{name}/{file:.+}", Road.KERNELSPEC_FILE),
    Row("/api/kernels", Road.HOUSE, "kernels"),
    Row("/api/kernels/{kernel_id}", Road.HOUSE, "kernel"),
    Row("/api/kernels/{kernel_id}/channels", Road.KERNEL),
    Row("/api/kernels/{kernel_id}/{action:restart|interrupt}", Road.HOUSE, "kernel_action"),
    Row("/api/sessions", Road.HOUSE, "sessions"),
    Row("/api/sessions/{session_id}", Road.HOUSE, "session"),
    Row(BRIDGE_PREFIX, Road.HOUSE, "http_over_websocket", "GET"),
    Row(BRIDGE_PREFIX + "/diagnose", Road.HOUSE, "diagnose", "GET"),
    Row(BRIDGE_PREFIX + "/proxied_ws/{path:.+}", Road.HOUSE, "proxied_ws", "GET"),
    Row("/proxy", Road.PORT),
    Row("/proxy/{tail:.*}", Road.PORT),
    Row("/apps", Road.APP),
    Row("/apps/{tail:.*}", Road.APP),
    Row("/", Road.HOME),
    Row("/{tail:.*}", Road.PRIMARY),
)

# The first segment narrows the rows to try: most requests match after one or two.
_BY_SEGMENT: dict[str, tuple[Row, ...]] = {}
for _row in TABLE:
    _first = _row.template[1:].partition("/")[0]
    if not _first.startswith("{"):
        _BY_SEGMENT[_first] = (*_BY_SEGMENT.get(_first, ()), _row)
_FALLBACK = tuple(r for r in TABLE if r.template[1:].partition("/")[0].startswith("{"))


@dataclass(frozen=True)
class Match:
    row: Row
    params: dict[str, str]

    @property
    def road(self) -> Road:
        return self.row.road


def classify(path: str) -> Match:
    """The row that serves canonical `path`: the first in `TABLE` whose template matches."""
    first = path[1:].partition("/")[0]
    for row in (*_BY_SEGMENT.get(first, ()), *_FALLBACK):
        m = row.regex.fullmatch(path)
        if m is not None:
            return Match(row, m.groupdict())
    raise AssertionError(f"no route for {path!r}")  # the last row takes any path


def house_rows() -> tuple[Row, ...]:
    """The rows aiohttp serves, in table order."""
    return tuple(row for row in TABLE if row.road is Road.HOUSE)


# --- what the router tells the engine -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward the request to `target` along `road`; `path` (raw) replaces the client's if given."""

    target: Target
    road: Road
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer with a redirect to `location` (an app's address without its final slash)."""

    location: str
    status: int = 301


# A road decided only after a wait (a kernel's owner, a name to resolve, an app to start):
# the engine pauses the connection and awaits it. A `RelayError` it raises is the answer.
Later = Callable[[], Awaitable[Forward | Redirect]]
