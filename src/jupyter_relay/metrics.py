"""The relay's Prometheus metrics: counted cheaply as things happen, shaped at scrape time.

The engine counts every answer and times every backend's response head with
`Meter` (plain dicts: a few hundred nanoseconds a request, no lock, no
prometheus_client object on the hot path); the backends and the port proxy keep
plain counters of their own (`SshBackend.reconnects`, `HubBackend.server_starts`,
`PortProxy.denials`). `RelayCollector` reads all of it when `/relay/metrics` is
scraped, into a registry of the relay's own (never the process-wide default:
one process may run several relays).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .backends import Backend
from .backends.hub import HubBackend
from .backends.ssh import SshBackend
from .fast import client
from .proxy.core import PortProxy
from .routes import Road

# The `road` label: which row of the route table served the request (`routes.Road`).
ROAD_LABELS: dict[Road, str] = {
    Road.PRIMARY: "primary",
    Road.KERNEL: "kernel",
    Road.KERNELSPEC_FILE: "kernelspec_file",
    Road.PORT: "port",
    Road.APP: "app",
    Road.HOUSE: "house",
    Road.HOME: "home",
}
# The `backend` label of an answer no backend was chosen for (a port refused, an unknown
# kernel): no backend may be named so (names are [a-z][a-z0-9_]*). The house is "relay".
NO_BACKEND = client.NO_BACKEND
# Port-proxy targets are named by their prefix, which clients choose: past this many
# series, new label sets are counted under backend="_other" (memory stays bounded).
MAX_SERIES = 1000
OTHER = "_other"
# Seconds to a backend's response head: from a millisecond (a loopback Jupyter) to the
# default --backend-timeout.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


def status_class(status: int) -> str:
    """An HTTP status's class label: `2xx`, `4xx`, …; `none` when nothing was answered."""
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return "none"


class Histogram:
    """One backend's latencies: a count per bucket (not cumulative, +Inf last) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as Prometheus has them: (`le`, count)."""
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return out


class Meter:
    """What the engine counts: answers by road, backend and status class; latencies; websockets.

    `observe` and `websocket` run on every request; they only bump integers in dicts.
    """

    def __init__(self) -> None:
        # (road, backend, status // 100) -> answers
        self.requests: dict[tuple[Road, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.websockets: dict[str, int] = {}

    def observe(self, road: Road, backend: str, status: int, latency: float | None) -> None:
        """One answer (`status` 0: none was sent); `latency`: seconds to the backend's head."""
        key = (road, backend, status // 100)
        requests = self.requests
        count = requests.get(key)
        if count is None and len(requests) >= MAX_SERIES:
            key = (road, OTHER, status // 100)
            count = requests.get(key)
        requests[key] = (count or 0) + 1
        if latency is not None:
            histogram = self.latency.get(backend)
            if histogram is None:
                if len(self.latency) >= MAX_SERIES:
                    backend = OTHER
                histogram = self.latency.setdefault(backend, Histogram())
            histogram.observe(latency)

    def websocket(self, backend: str, change: int) -> None:
        """A websocket to `backend` opened (+1, after the backend's 101) or closed (-1)."""
        websockets = self.websockets
        if backend not in websockets and len(websockets) >= MAX_SERIES:
            backend = OTHER
        websockets[backend] = websockets.get(backend, 0) + change


def request_labels(key: tuple[Road, str, int]) -> tuple[str, str, str]:
    """The labels (road, backend, status_class) of a `Meter.requests` key."""
    road, backend, hundreds = key
    return ROAD_LABELS[road], backend, status_class(hundreds * 100)


class RelayCollector(Collector):
    """Reads the meter, the backends and the port proxy at scrape time."""

    def __init__(self, meter: Meter, backends: Mapping[str, Backend], proxy: PortProxy) -> None:
        self.meter = meter
        self.backends = backends
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "jupyter_relay_requests",
            "Answers sent, by route-table road, backend and status class",
            labels=("road", "backend", "status_class"),
        )
        for key, count in sorted(self.meter.requests.items(), key=_sort_key):
            requests.add_metric(request_labels(key), count)
        yield requests

        latency = HistogramMetricFamily(
            "jupyter_relay_upstream_latency_seconds",
            "Seconds from a request to its backend's response head (plain HTTP requests)",
            labels=("backend",),
        )
        for backend, histogram in sorted(self.meter.latency.items()):
            latency.add_metric((backend,), histogram.buckets(), histogram.total)
        yield latency

        websockets = GaugeMetricFamily(
            "jupyter_relay_websockets_open",
            "Websockets open through the relay, by backend",
            labels=("backend",),
        )
        for backend, count in sorted(self.meter.websockets.items()):
            websockets.add_metric((backend,), count)
        yield websockets

        yield from self._backends()

        denials = CounterMetricFamily(
            "jupyter_relay_port_proxy_denials",
            "Port-proxy requests refused: not a /proxy/ form (form), a --proxy-deny-port "
            "port (port), a host the allowlist does not hold (host)",
            labels=("reason",),
        )
        for reason, count in sorted(self.proxy.denials.items()):
            denials.add_metric((reason,), count)
        yield denials

    def _backends(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "jupyter_relay_backend_up",
            "1 if the backend answered its last health check, 0 if not (after the first check)",
            labels=("backend", "kind"),
        )
        reconnects = CounterMetricFamily(
            "jupyter_relay_ssh_reconnects",
            "Times an ssh backend's connection was established again after it was lost",
            labels=("backend",),
        )
        starts = CounterMetricFamily(
            "jupyter_relay_hub_server_starts",
            "Times the relay asked a hub to start the user's server",
            labels=("backend",),
        )
        for name, backend in self.backends.items():
            health = backend.last_health
            if health is not None:
                up.add_metric((name, backend.spec.kind), 1.0 if health.reachable else 0.0)
            if isinstance(backend, SshBackend):
                reconnects.add_metric((name,), backend.reconnects)
            if isinstance(backend, HubBackend):
                starts.add_metric((name,), backend.server_starts)
        yield from (up, reconnects, starts)


def _sort_key(item: tuple[tuple[Road, str, int], int]) -> tuple[str, str, int]:
    (road, backend, hundreds), _ = item
    return ROAD_LABELS[road], backend, hundreds


def make_registry(
    meter: Meter, backends: Mapping[str, Backend], proxy: PortProxy
) -> CollectorRegistry:
    """A registry of this relay's own, holding its one collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(meter, backends, proxy))
    return registry
