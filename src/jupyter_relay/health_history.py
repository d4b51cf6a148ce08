"""Each backend's health over the last hour, for the status page's chart.

Bounded in memory: samples older than the window are dropped, and checks closer
together than `min_gap` (a page polling every two seconds) share one sample, in
which a failure outlasts a success, so an outage is never hidden by the next
check. Pure: the caller says when each check happened.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 3600.0  # seconds kept: the last hour
MIN_GAP = 5.0  # at most one sample per 5 s: 720 an hour, per backend


@dataclass(frozen=True)
class Sample:
    """One check: when (epoch seconds), and its latency in ms (None: the backend was down)."""

    at: float
    latency_ms: float | None

    @property
    def up(self) -> bool:
        return self.latency_ms is not None


class HealthHistory:
    """The recent samples of every backend, by name."""

    def __init__(self, window: float = WINDOW, min_gap: float = MIN_GAP) -> None:
        self.window = window
        self.min_gap = min_gap
        self._limit = int(window / min_gap) + 2
        self._samples: dict[str, deque[Sample]] = {}

    def record(self, name: str, at: float, latency_ms: float | None) -> None:
        samples = self._samples.setdefault(name, deque(maxlen=self._limit))
        sample = Sample(at, latency_ms)
        if samples and 0 <= at - samples[-1].at < self.min_gap:
            last = samples[-1]
            if last.up or not sample.up:  # within the gap, a failure is kept
                samples[-1] = Sample(last.at, latency_ms)
            return
        samples.append(sample)
        self._trim(samples, at)

    def samples(self, name: str, now: float) -> tuple[Sample, ...]:
        """The samples of the window ending at `now`, oldest first."""
        samples = self._samples.get(name)
        if samples is None:
            return ()
        self._trim(samples, now)
        return tuple(samples)

    def _trim(self, samples: deque[Sample], now: float) -> None:
        while samples and samples[0].at < now - self.window:
            samples.popleft()
