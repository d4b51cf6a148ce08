"""The status page at `/relay/`: the relay's state in, escaped HTML out.

Pure: the handler (`status.py`) gathers the data; this module only writes it.
Everything that comes from outside the relay's own code (backend names, URLs,
errors, notebook paths, kernel states, app names) passes `html.escape`, in
text and in attributes alike. The page carries no credentials: its links have
no query, and nothing it is given holds a token. With JavaScript off it is
whole (the chart is an inline SVG drawn here); `status.js` swaps in a fresh
`#status` from the same URL every few seconds.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .health_history import WINDOW, Sample

REFRESH_SECONDS = 2.0  # how often the page's script asks again
CHART_W, CHART_H = 240, 40
UP_COLOUR, DOWN_COLOUR = "#1a7f37", "#cf222e"
NOTHING = "\u2013"  # an en dash, for a value not known


@dataclass(frozen=True)
class BackendView:
    """One backend as the page shows it (from `Backend.describe()` and the history)."""

    name: str
    kind: str
    url: str  # without secrets (`public_url`)
    primary: bool
    reachable: bool | None  # None: not checked yet
    latency_ms: float | None
    error: str | None
    kernels_error: str | None = None
    history: tuple[Sample, ...] = ()
    reached: str | None = None  # how requests get there, where that is worth saying


@dataclass(frozen=True)
class PageData:
    version: str
    uptime_seconds: float
    now: float  # epoch seconds: the chart's right edge
    backends: tuple[BackendView, ...]
    kernels: Sequence[Mapping[str, Any]] = ()  # the mixer's models
    sessions: Sequence[Mapping[str, Any]] = ()
    owners: Mapping[str, str] = field(default_factory=dict)  # kernel id -> backend
    lists_error: str | None = None  # why kernels or sessions could not be listed
    apps: Sequence[Mapping[str, Any]] = ()
    port_proxy: Mapping[str, Any] = field(default_factory=dict)
    # Kernels started for sessions never completed: (epoch seconds, what the relay did).
    reconciled: Sequence[tuple[float, str]] = ()
    pending_starts: int = 0  # such records still waiting


def e(value: object) -> str:
    """Escaped for HTML text and quoted attributes; None is shown as a dash."""
    return NOTHING if value is None else html.escape(str(value), quote=True)


def uptime_text(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days} d"] if days else []
    if days or hours:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min" if days or hours or minutes else f"{s} s")
    return " ".join(parts)


def lab_link(view: BackendView) -> tuple[str | None, str]:
    """(href, text): where this backend's JupyterLab opens, or why it has none here."""
    if view.primary:
        return "/lab", "JupyterLab (through the relay)"
    if view.kind == "jupyter" and view.url.startswith(("http://", "https://")):
        return view.url.rstrip("/") + "/lab", "its own JupyterLab (direct: asks its own token)"
    if view.kind == "gateway":
        return None, "kernels only: no JupyterLab"
    return None, "its kernels appear in the primary's JupyterLab"


def state_of(view: BackendView) -> tuple[str, str]:
    """(class, text) of the backend's state."""
    if view.reachable is None:
        return "unknown", "not checked yet"
    if view.reachable:
        return "up", "up"
    return "down", "down"


def chart(history: Sequence[Sample], now: float, window: float = WINDOW) -> str:
    """The last hour as an inline SVG: latency as a line, each failed check as a red bar."""
    up = [s for s in history if s.latency_ms is not None]
    top = max((s.latency_ms or 0.0 for s in up), default=0.0) or 1.0
    down = sum(1 for s in history if not s.up)

    def x(at: float) -> float:
        return round(max(0.0, min(1.0, 1 - (now - at) / window)) * CHART_W, 1)

    def y(ms: float) -> float:
        return round(CHART_H - 2 - (CHART_H - 4) * ms / top, 1)

    parts: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if len(run) == 1:
            cx, cy = run[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{UP_COLOUR}"/>')
        elif run:
            parts.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{UP_COLOUR}" '
                'stroke-width="1.5"/>'
            )
        run.clear()

    for sample in history:
        if sample.latency_ms is None:
            flush()
            parts.append(
                f'<rect class="fail" x="{max(0.0, x(sample.at) - 1)}" y="0" width="2" '
                f'height="{CHART_H}" fill="{DOWN_COLOUR}"/>'
            )
        else:
            run.append(f"{x(sample.at)},{y(sample.latency_ms)}")
    flush()
    scale = f"max {top:.0f} ms, 60 min" if up else "60 min"
    title = (
        f"last hour: {len(history)} checks, {down} failed, highest latency {top:.0f} ms"
        if history
        else "last hour: no checks yet"
    )
    return (
        f'<svg class="chart" width="{CHART_W}" height="{CHART_H}" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{e(title)}">'
        f"<title>{e(title)}</title>"
        f'<rect x="0" y="0" width="{CHART_W}" height="{CHART_H}" fill="#f6f8fa"/>'
        f"{''.join(parts)}"
        f'<text x="2" y="9" font-size="8" fill="#656d76">{e(scale)}</text></svg>'
    )


def _latency(ms: float | None) -> str:
    return NOTHING if ms is None else f"{ms:.1f} ms"


def _kernels_table(kernels: Sequence[Mapping[str, Any]]) -> str:
    if not kernels:
        return '<p class="none">No kernels.</p>'
    rows = "".join(
        f'<tr class="kernel"><td><code>{e(k.get("id"))}</code></td><td>{e(k.get("name"))}</td>'
        f'<td class="kstate">{e(k.get("execution_state"))}</td><td>{e(k.get("connections"))}</td>'
        f"<td>{e(k.get('last_activity'))}</td></tr>"
        for k in kernels
    )
    return (
        '<table class="kernels"><caption>Kernels</caption><tr><th>id</th><th>kernelspec</th>'
        f"<th>state</th><th>connections</th><th>last activity</th></tr>{rows}</table>"
    )


def _sessions_table(sessions: Sequence[Mapping[str, Any]]) -> str:
    if not sessions:
        return '<p class="none">No sessions.</p>'
    rows = []
    for s in sessions:
        raw = s.get("kernel")
        kernel: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        rows.append(
            f'<tr class="session"><td class="path">{e(s.get("path"))}</td>'
            f"<td>{e(s.get('type'))}</td><td><code>{e(kernel.get('id'))}</code></td>"
            f'<td class="kstate">{e(kernel.get("execution_state"))}</td></tr>'
        )
    return (
        '<table class="sessions"><caption>Sessions</caption><tr><th>notebook</th><th>type</th>'
        f"<th>kernel</th><th>kernel state</th></tr>{''.join(rows)}</table>"
    )


def _owner(owners: Mapping[str, str], kernel: Any) -> str | None:
    """The backend that runs `kernel` (a kernel model), if the mixer knows it."""
    return owners.get(str(kernel.get("id"))) if isinstance(kernel, Mapping) else None


def _backend(view: BackendView, data: PageData) -> str:
    css, text = state_of(view)
    reason = f' <span class="reason">{e(view.error)}</span>' if view.error else ""
    href, label = lab_link(view)
    lab = f'<a href="{e(href)}">{e(label)}</a>' if href else f'<span class="note">{e(label)}</span>'
    kernels = [k for k in data.kernels if _owner(data.owners, k) == view.name]
    sessions = [s for s in data.sessions if _owner(data.owners, s.get("kernel")) == view.name]
    kernels_error = (
        f'<p class="problem">Kernels left out: {e(view.kernels_error)}</p>'
        if view.kernels_error
        else ""
    )
    primary = ' <span class="tag">primary</span>' if view.primary else ""
    return (
        f'<section class="backend {css}" id="backend-{e(view.name)}" data-name="{e(view.name)}" '
        f'data-state="{css}">'
        f"<h3>{e(view.name)}{primary}</h3>"
        '<table class="facts">'
        f"<tr><th>kind</th><td>{e(view.kind)}</td></tr>"
        f'<tr><th>address</th><td class="address">{e(view.url)}</td></tr>'
        + (
            f'<tr><th>reached</th><td class="reached">{e(view.reached)}</td></tr>'
            if view.reached
            else ""
        )
        + f'<tr><th>state</th><td class="state {css}"><strong>{e(text)}</strong>{reason}</td></tr>'
        f'<tr><th>latency now</th><td class="latency">{e(_latency(view.latency_ms))}</td></tr>'
        f"<tr><th>last hour</th><td>{chart(view.history, data.now)}</td></tr>"
        f"<tr><th>JupyterLab</th><td>{lab}</td></tr>"
        f"</table>{kernels_error}{_kernels_table(kernels)}{_sessions_table(sessions)}</section>"
    )


def _unowned(data: PageData) -> str:
    names = {v.name for v in data.backends}
    kernels = [k for k in data.kernels if _owner(data.owners, k) not in names]
    sessions = [s for s in data.sessions if _owner(data.owners, s.get("kernel")) not in names]
    if not kernels and not sessions:
        return ""
    return (
        '<section class="backend unowned"><h3>Backend not known yet</h3>'
        f"{_kernels_table(kernels)}{_sessions_table(sessions)}</section>"
    )


def _apps(apps: Sequence[Mapping[str, Any]]) -> str:
    if not apps:
        return '<p class="none">No named apps (<code>--app</code>).</p>'
    rows = "".join(
        f'<tr class="app"><td>{e(a.get("name"))}</td><td>{e(a.get("url"))}</td>'
        f"<td>{e(a.get('state'))}</td><td>{e(a.get('pid'))}</td><td>{e(a.get('port'))}</td>"
        f"<td>{e(a.get('error'))}</td></tr>"
        for a in apps
    )
    return (
        '<table class="apps"><tr><th>name</th><th>address</th><th>state</th><th>pid</th>'
        f"<th>port</th><th>error</th></tr>{rows}</table>"
    )


def _port_proxy(port_proxy: Mapping[str, Any]) -> str:
    allow = "".join(f"<li><code>{e(a)}</code></li>" for a in port_proxy.get("allow", ()))
    deny = ", ".join(e(p) for p in port_proxy.get("deny_ports", ())) or "none"
    home = port_proxy.get("port_home")
    leads = (
        f'<p class="port-home"><code>/proxy/&lt;port&gt;/</code> leads to {e(home)}.</p>'
        if home
        else ""
    )
    return (
        f"{leads}<p><code>/proxy/&lt;port&gt;/</code> and "
        "<code>/proxy/&lt;host&gt;:&lt;port&gt;/</code> "
        f'may reach:</p><ul class="allow">{allow or "<li>nothing</li>"}</ul>'
        f"<p>Ports refused: {deny}.</p>"
    )


def _reconciled(data: PageData) -> str:
    if not data.reconciled and not data.pending_starts:
        return ""
    items = "".join(
        f'<li class="reconciled">{e(_ago(data.now - at))}: {e(what)}</li>'
        for at, what in reversed(data.reconciled)
    )
    waiting = (
        f"<p>{data.pending_starts} kernel start(s) for sessions not completed yet, waiting.</p>"
        if data.pending_starts
        else ""
    )
    return f"<h2>Kernels reconciled</h2>{waiting}<ul>{items}</ul>"


def _ago(seconds: float) -> str:
    return f"{uptime_text(max(seconds, 0))} ago"


def render_status(data: PageData) -> str:
    """The `#status` part: what the page's script swaps in on each refresh."""
    up = sum(1 for b in data.backends if b.reachable)
    problem = (
        f'<p class="problem">Kernels and sessions could not be listed: {e(data.lists_error)}</p>'
        if data.lists_error
        else ""
    )
    return (
        f'<div id="status" data-now="{data.now:.0f}">'
        f'<p class="summary">Version {e(data.version)}, up {e(uptime_text(data.uptime_seconds))}; '
        f"{up} of {len(data.backends)} backends up.</p>{problem}"
        f"<h2>Backends</h2>{''.join(_backend(b, data) for b in data.backends)}{_unowned(data)}"
        f"{_reconciled(data)}"
        f"<h2>Named apps</h2>{_apps(data.apps)}"
        f"<h2>Port proxy</h2>{_port_proxy(data.port_proxy)}</div>"
    )


def render_page(data: PageData, refresh_seconds: float = REFRESH_SECONDS) -> str:
    """The whole page. Its script and style are the relay's own files (`/relay/static/`)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>jupyter-relay status</title>"
        '<link rel="stylesheet" href="/relay/static/status.css">'
        # With JavaScript off the page reloads itself, more slowly.
        '<noscript><meta http-equiv="refresh" content="15"></noscript>'
        '<script src="/relay/static/status.js" defer></script></head>\n'
        f'<body data-refresh-ms="{int(refresh_seconds * 1000)}">'
        "<header><h1>jupyter-relay</h1><nav>"
        '<a href="/relay/api/status">JSON</a> · <a href="/lab">JupyterLab</a> · '
        '<a href="/relay/healthz">healthz</a></nav>'
        '<p id="live">Static page (reloads every 15 s without JavaScript).</p></header>\n'
        f"<main>{render_status(data)}</main>\n"
        "</body></html>\n"
    )
