"""The status page's HTML, from data: escaped everywhere, no credentials, whole without JS."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from jupyter_relay.health_history import Sample
from jupyter_relay.status_page import (
    BackendView,
    PageData,
    chart,
    lab_link,
    render_page,
    uptime_text,
)

HOSTILE = "<script>alert(1)</script>\"'&"
NOW = 1_800_000_000.0


class Collect(HTMLParser):
    """Tags, attributes and text as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Collect:
    parser = Collect()
    parser.feed(page)
    parser.close()
    return parser


def view(**fields: object) -> BackendView:
    name = str(fields.get("name", "a"))
    values: dict[str, object] = {
        "name": name,
        "kind": "jupyter",
        "url": "http://127.0.0.1:8888/",
        "primary": name == "a",
        "reachable": True,
        "latency_ms": 2.5,
        "error": None,
    }
    values.update(fields)
    return BackendView(**values)  # type: ignore[arg-type]


def hostile_data() -> PageData:
    kernel = {"id": HOSTILE, "name": HOSTILE, "execution_state": HOSTILE}
    return PageData(
        version=HOSTILE,
        uptime_seconds=3725,
        now=NOW,
        backends=(
            view(name=HOSTILE, kind=HOSTILE, url=HOSTILE, primary=True),
            view(name="b", reachable=False, latency_ms=None, error=HOSTILE, kernels_error=HOSTILE),
        ),
        kernels=[kernel],
        sessions=[{"id": "s", "path": HOSTILE, "type": HOSTILE, "kernel": kernel}],
        owners={HOSTILE: HOSTILE},
        lists_error=HOSTILE,
        apps=[{"name": HOSTILE, "url": HOSTILE, "state": HOSTILE, "error": HOSTILE}],
        port_proxy={"allow": [HOSTILE], "deny_ports": [HOSTILE]},
        reconciled=[(NOW - 90, HOSTILE)],
        pending_starts=1,
    )


def test_everything_echoed_is_escaped() -> None:
    page = render_page(hostile_data())
    assert "<script>alert" not in page
    assert "\"'&" not in page
    parsed = parse(page)
    # The only script is the relay's own file; the hostile text arrives as text, intact.
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{"src": "/relay/static/status.js", "defer": None}]
    assert "".join(parsed.text).count(HOSTILE) >= 10
    for _tag, attrs in parsed.tags:
        assert not any(name.startswith("on") for name in attrs)


def test_the_hostile_backend_is_still_shown_with_its_kernel_and_session() -> None:
    parsed = parse(render_page(hostile_data()))
    sections = [a for t, a in parsed.tags if t == "section" and a.get("data-name") == HOSTILE]
    assert len(sections) == 1
    assert sections[0]["data-state"] == "up"


def test_kernels_reconciled_are_listed_newest_first_and_waiting_ones_counted() -> None:
    data = PageData(
        version="1",
        uptime_seconds=1,
        now=NOW,
        backends=(view(),),
        reconciled=[(NOW - 120, "kernel k1: shut down"), (NOW - 5, "kernel k2: re-bound")],
        pending_starts=2,
    )
    parsed = parse(render_page(data))
    text = "".join(parsed.text)
    assert "Kernels reconciled" in text
    assert text.index("k2: re-bound") < text.index("k1: shut down")
    assert "5 s ago" in text and "2 min ago" in text
    assert "2 kernel start(s) for sessions not completed yet" in text
    quiet = PageData(version="1", uptime_seconds=1, now=NOW, backends=(view(),))
    assert "Kernels reconciled" not in render_page(quiet)


def test_a_backend_down_shows_why() -> None:
    data = PageData(
        version="1",
        uptime_seconds=1,
        now=NOW,
        backends=(
            view(name="b", reachable=False, latency_ms=None, error="refused; is it running?"),
        ),
    )
    page = render_page(data)
    assert 'data-name="b" data-state="down"' in page
    assert '<strong>down</strong> <span class="reason">refused; is it running?</span>' in page


def test_links_carry_no_query_and_no_credentials() -> None:
    data = hostile_data()
    parsed = parse(render_page(data))
    hrefs = [a["href"] for t, a in parsed.tags if t in ("a", "link") and a.get("href")]
    assert "/relay/api/status" in hrefs and "/lab" in hrefs
    for href in hrefs:
        assert href is not None and "?" not in href and "token" not in href.lower()


@pytest.mark.parametrize(
    ("fields", "href"),
    [
        ({"primary": True}, "/lab"),
        ({"name": "b", "url": "http://gpu:8888/base/"}, "http://gpu:8888/base/lab"),
        ({"name": "b", "url": "javascript:alert(1)"}, None),
        ({"name": "eg", "kind": "gateway", "url": "gateway+http://eg:8888/"}, None),
        ({"name": "s", "kind": "ssh", "url": "ssh://me@box"}, None),
    ],
)
def test_the_jupyterlab_link_of_each_kind(fields: dict[str, object], href: str | None) -> None:
    assert lab_link(view(**fields))[0] == href


def test_the_chart_draws_latency_and_failures_of_the_last_hour() -> None:
    history = (
        Sample(NOW - 4000, 9.0),  # out of the window: pinned to the left edge
        Sample(NOW - 1800, 2.0),
        Sample(NOW - 900, 4.0),
        Sample(NOW - 600, None),
        Sample(NOW - 10, 1.0),
    )
    svg = chart(history, NOW)
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert svg.count('class="fail"') == 1
    assert "5 checks, 1 failed" in svg
    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    xs = [float(p.split(",")[0]) for p in points.group(1).split()]
    assert xs == sorted(xs) and xs[0] == 0.0 and 0 < xs[-1] < 240
    assert "no checks yet" in chart((), NOW)


def test_uptime_reads_as_a_person_would() -> None:
    assert uptime_text(42) == "42 s"
    assert uptime_text(3725) == "1 h 2 min"
    assert uptime_text(2 * 86400 + 60) == "2 d 0 h 1 min"


def test_without_kernels_or_apps_the_page_says_so() -> None:
    page = render_page(PageData(version="1", uptime_seconds=1, now=NOW, backends=(view(),)))
    assert "No kernels." in page and "No sessions." in page and "No named apps" in page
    assert "<li>nothing</li>" in page
