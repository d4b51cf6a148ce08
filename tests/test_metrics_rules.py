"""The metrics' own rules: status classes, labels, buckets, the series cap, the exposition."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_relay import metrics
from jupyter_relay.metrics import LATENCY_BUCKETS, MAX_SERIES, Histogram, Meter
from jupyter_relay.proxy.allow import Allowlist
from jupyter_relay.proxy.core import PortProxy
from jupyter_relay.routes import Road


@pytest.mark.parametrize(
    ("status", "label"),
    [(101, "1xx"), (200, "2xx"), (204, "2xx"), (302, "3xx"), (403, "4xx"), (504, "5xx")],
)
def test_status_class(status: int, label: str) -> None:
    assert metrics.status_class(status) == label


@pytest.mark.parametrize("status", [0, 99, 600, -1])
def test_no_answer_or_no_status_is_none(status: int) -> None:
    assert metrics.status_class(status) == "none"


def test_every_road_has_a_label_of_its_own() -> None:
    assert set(metrics.ROAD_LABELS) == set(Road)
    labels = list(metrics.ROAD_LABELS.values())
    assert len(set(labels)) == len(labels)
    assert all(label.isidentifier() and label.islower() for label in labels)


def test_request_labels() -> None:
    assert metrics.request_labels((Road.KERNEL, "gpu", 1)) == ("kernel", "gpu", "1xx")
    assert metrics.request_labels((Road.PORT, "-", 4)) == ("port", "-", "4xx")
    assert metrics.request_labels((Road.PRIMARY, "lab", 0)) == ("primary", "lab", "none")


def test_no_backend_label_cannot_be_a_backend_name() -> None:
    from jupyter_relay.specs import NAME_RE

    assert not NAME_RE.fullmatch(metrics.NO_BACKEND)
    assert not NAME_RE.fullmatch(metrics.OTHER)


def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    histogram = Histogram()
    for seconds in (0.001, 0.0011, 0.3, 500.0):
        histogram.observe(seconds)
    buckets = dict(histogram.buckets())
    assert list(buckets)[-1] == "+Inf"
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.001"] == 1  # le: less than or equal
    assert buckets["0.0025"] == 2
    assert buckets["0.25"] == 2
    assert buckets["0.5"] == 3
    assert buckets["120.0"] == 3
    assert buckets["+Inf"] == 4
    assert math.isclose(histogram.total, 500.3021)


def test_meter_counts_by_road_backend_and_class() -> None:
    meter = Meter()
    meter.observe(Road.PRIMARY, "lab", 200, 0.002)
    meter.observe(Road.PRIMARY, "lab", 201, 0.004)
    meter.observe(Road.PRIMARY, "lab", 404, None)
    meter.observe(Road.HOUSE, "relay", 403, None)
    assert meter.requests == {
        (Road.PRIMARY, "lab", 2): 2,
        (Road.PRIMARY, "lab", 4): 1,
        (Road.HOUSE, "relay", 4): 1,
    }
    assert sum(meter.latency["lab"].counts) == 2
    assert "relay" not in meter.latency
    meter.websocket("lab", 1)
    meter.websocket("lab", 1)
    meter.websocket("lab", -1)
    assert meter.websockets == {"lab": 1}


def test_series_are_capped_for_names_clients_choose() -> None:
    """Port-proxy targets are named by their prefix: a client could make any number."""
    meter = Meter()
    for port in range(1, MAX_SERIES + 50):
        meter.observe(Road.PORT, f"/proxy/{port}", 200, 0.001)
        meter.websocket(f"/proxy/{port}", 1)
    assert len(meter.requests) == MAX_SERIES + 1  # the last one: "_other"
    assert meter.requests[Road.PORT, metrics.OTHER, 2] == 49
    assert len(meter.latency) == MAX_SERIES + 1
    assert sum(meter.latency[metrics.OTHER].counts) == 49
    assert meter.websockets[metrics.OTHER] == 49
    # A series already known keeps counting under its own name.
    meter.observe(Road.PORT, "/proxy/1", 200, None)
    assert meter.requests[Road.PORT, "/proxy/1", 2] == 2


def test_the_registry_is_the_relays_own_and_parses() -> None:
    meter = Meter()
    meter.observe(Road.KERNELSPEC_FILE, "gpu", 200, 0.01)
    meter.observe(Road.PORT, "-", 403, None)
    proxy = PortProxy(Allowlist.parse(["loopback"]), (), {}, 1.0)
    proxy.denials["host"] = 1
    first = metrics.make_registry(meter, {}, proxy)
    second = metrics.make_registry(Meter(), {}, proxy)  # two relays in one process
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(first).decode())}
    requests = families["jupyter_relay_requests"]
    assert requests.type == "counter"
    assert {(tuple(sorted(s.labels.items())), s.value) for s in requests.samples} == {
        ((("backend", "gpu"), ("road", "kernelspec_file"), ("status_class", "2xx")), 1.0),
        ((("backend", "-"), ("road", "port"), ("status_class", "4xx")), 1.0),
    }
    assert families["jupyter_relay_upstream_latency_seconds"].type == "histogram"
    assert families["jupyter_relay_port_proxy_denials"].samples[0].value == 1
    other = generate_latest(second).decode()
    assert "kernelspec_file" not in other
    assert "jupyter_relay" not in generate_latest().decode()  # nothing in the global registry
