"""The health history: one hour, bounded, failures kept within a gap."""

from __future__ import annotations

from jupyter_relay.health_history import HealthHistory, Sample


def test_samples_older_than_the_window_are_dropped() -> None:
    history = HealthHistory(window=60, min_gap=5)
    for at in range(0, 200, 10):
        history.record("a", float(at), 1.0)
    kept = history.samples("a", 190.0)
    assert [s.at for s in kept] == [float(t) for t in range(130, 200, 10)]
    assert history.samples("a", 1000.0) == ()  # read later: nothing left of the hour


def test_checks_closer_than_the_gap_share_a_sample_and_a_failure_outlasts_a_success() -> None:
    history = HealthHistory(window=60, min_gap=5)
    history.record("a", 100.0, 3.0)
    history.record("a", 101.0, 4.0)  # the latest success replaces the earlier one
    assert history.samples("a", 101.0) == (Sample(100.0, 4.0),)
    history.record("a", 102.0, None)
    history.record("a", 103.0, 2.0)  # the failure in this gap stays
    assert history.samples("a", 103.0) == (Sample(100.0, None),)
    history.record("a", 105.0, 2.0)
    assert history.samples("a", 105.0) == (Sample(100.0, None), Sample(105.0, 2.0))


def test_the_memory_is_bounded_whatever_the_clock_does() -> None:
    history = HealthHistory(window=3600, min_gap=5)
    for i in range(10_000):
        history.record("a", float(i * 5), 1.0)
    assert len(history.samples("a", 50_000.0)) <= 3600 / 5 + 2
    assert history.samples("nobody", 0.0) == ()


def test_backends_are_kept_apart() -> None:
    history = HealthHistory()
    history.record("a", 1.0, 1.0)
    history.record("b", 1.0, None)
    assert history.samples("a", 2.0) == (Sample(1.0, 1.0),)
    assert not history.samples("b", 2.0)[0].up
