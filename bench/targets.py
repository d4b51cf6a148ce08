"""Ratios between paths, and the issue's targets for the relay, met or missed.

Absolute figures drift on a shared machine; ratios measured in the same run
against the same backend do much less. Every figure of the relay is divided
by the same figure of every other path (`relay/direct`, `relay/chp`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .paths import CHP, DIRECT, JSP, RELAY, SSH_L

Figures = dict[str, dict[str, dict[str, float]]]  # scenario -> path -> metric -> value


def ratios(figures: Figures) -> dict[str, dict[str, dict[str, float]]]:
    """scenario -> metric -> "relay/<path>" -> the relay's figure over that path's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for scenario, by_path in figures.items():
        relay = by_path.get(RELAY, {})
        for metric, value in relay.items():
            for other, other_figures in by_path.items():
                base = other_figures.get(metric)
                if other == RELAY or base is None or base == 0:
                    continue
                out.setdefault(scenario, {}).setdefault(metric, {})[f"relay/{other}"] = value / base
    return out


@dataclass(frozen=True)
class Target:
    """The relay's figure, alone or over another path's, against a bound."""

    name: str
    description: str
    scenario: str
    metric: str
    versus: str | None  # None: the relay's own figure
    at_least: bool
    bound: float
    unit: str = "x"

    def evaluate(self, figures: Figures) -> dict[str, Any]:
        by_path = figures.get(self.scenario, {})
        relay = by_path.get(RELAY, {}).get(self.metric)
        value: float | None = relay
        if relay is not None and self.versus is not None:
            base = by_path.get(self.versus, {}).get(self.metric)
            value = relay / base if base else None
        met = (
            None
            if value is None
            else (value >= self.bound if self.at_least else value <= self.bound)
        )
        return {
            "name": self.name,
            "description": self.description,
            "value": value,
            "target": f"{'≥' if self.at_least else '≤'} {self.bound:g}{self.unit}",
            "met": met,
        }


TARGETS = (
    Target(
        "small_http_requests",
        "Small HTTP: relay requests/s ≥ 1.5x configurable-http-proxy's",
        "small_http",
        "requests_per_s",
        CHP,
        True,
        1.5,
    ),
    Target(
        "small_http_p99",
        "Small HTTP: relay p99 latency ≤ configurable-http-proxy's",
        "small_http",
        "p99_ms",
        CHP,
        False,
        1.0,
    ),
    Target(
        "websocket_vs_chp",
        "WebSocket: relay messages/s ≥ 1.0x configurable-http-proxy's",
        "websocket",
        "messages_per_s",
        CHP,
        True,
        1.0,
    ),
    Target(
        "websocket_vs_jsp",
        "WebSocket: relay messages/s ≥ 3x jupyter-server-proxy's",
        "websocket",
        "messages_per_s",
        JSP,
        True,
        3.0,
    ),
    Target(
        "kernel_v1",
        "Kernel execute, v1 protocol: relay median ≤ 0.25x direct",
        "kernel_execute",
        "v1_median_ms",
        DIRECT,
        False,
        0.25,
    ),
    Target(
        "kernel_legacy",
        "Kernel execute, legacy protocol: relay median ≤ 0.25x direct",
        "kernel_execute",
        "legacy_median_ms",
        DIRECT,
        False,
        0.25,
    ),
    Target(
        "kernel_services",
        "Kernel execute, @jupyterlab/services: relay median ≤ 0.25x direct",
        "kernel_execute",
        "services_median_ms",
        DIRECT,
        False,
        0.25,
    ),
    Target(
        "download",
        "Large transfer: relay download ≥ 50% of direct MB/s",
        "large_transfer",
        "download_mb_per_s",
        DIRECT,
        True,
        0.5,
    ),
    Target(
        "upload",
        "Large transfer: relay upload ≥ 50% of direct MB/s",
        "large_transfer",
        "upload_mb_per_s",
        DIRECT,
        True,
        0.5,
    ),
    Target(
        "transfer_rss",
        "Large transfer: relay peak RSS growth ≤ 64 MiB",
        "large_transfer",
        "peak_rss_growth_mib",
        None,
        False,
        64,
        " MiB",
    ),
    Target(
        "idle_websockets",
        "Idle websockets: relay RSS ≤ 50 KiB per connection",
        "idle_websockets",
        "kib_per_connection",
        None,
        False,
        50,
        " KiB",
    ),
    Target(
        "page_load",
        "JupyterLab page load: relay ≤ 1.15x direct",
        "page_load",
        "median_s",
        DIRECT,
        False,
        1.15,
    ),
    *(
        Target(
            f"ssh_{variant}",
            f"Jupyter over SSH, execute {client}: relay median ≤ 0.25x ssh -L",
            "ssh",
            f"{variant}_median_ms",
            SSH_L,
            False,
            0.25,
        )
        for variant, client in (
            ("v1", "v1 protocol"),
            ("legacy", "legacy protocol"),
            ("services", "@jupyterlab/services"),
        )
    ),
    Target(
        "ssh_download",
        "Jupyter over SSH: relay download ≥ 1.0x ssh -L's MB/s",
        "ssh",
        "download_mb_per_s",
        SSH_L,
        True,
        1.0,
    ),
    Target(
        "ssh_upload",
        "Jupyter over SSH: relay upload ≥ 1.0x ssh -L's MB/s",
        "ssh",
        "upload_mb_per_s",
        SSH_L,
        True,
        1.0,
    ),
    Target(
        "ssh_page_load",
        "Jupyter over SSH: relay JupyterLab page load ≤ 1.0x ssh -L",
        "ssh",
        "page_load_s",
        SSH_L,
        False,
        1.0,
    ),
)


def evaluate(figures: Figures) -> list[dict[str, Any]]:
    """The targets of the scenarios this run measured (`--only` leaves the others out)."""
    return [t.evaluate(figures) for t in TARGETS if t.scenario in figures]
