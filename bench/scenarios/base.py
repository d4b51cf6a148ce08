"""What a scenario is: the paths it applies to, the figures it reports, how it measures one path."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..backends import Backends
from ..paths import ProxyPath
from ..settings import Settings

Metrics = dict[str, float]


@dataclass(frozen=True)
class Metric:
    """One figure a scenario reports for a path."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    # Only for paths through a proxy (a proxy's memory): absent for `direct`.
    proxy_only: bool = False
    # Shown in the README's short table and in the chart.
    headline: bool = False


@dataclass
class Context:
    """What every scenario may use: the settings, the credentials, the backends, the paths."""

    settings: Settings
    token: str
    backends: Backends
    paths: dict[str, ProxyPath]
    workdir: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


class PartialResult(RuntimeError):
    """Some figures of a path were measured, others failed: keep both."""

    def __init__(self, metrics: Metrics, message: str) -> None:
        super().__init__(message)
        self.metrics = metrics


class Scenario(ABC):
    """A scenario; `prepared` brackets the measurement of all its paths."""

    name: ClassVar[str]
    title: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[Metric, ...]]

    def metrics_for(self, path: str) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if not (m.proxy_only and path == "direct"))

    @contextlib.asynccontextmanager
    async def prepared(self, ctx: Context) -> AsyncIterator[None]:
        """Set up what every path shares (a kernel, a browser); by default nothing."""
        yield

    def path(self, ctx: Context, name: str) -> ProxyPath:
        """The path `name` as this scenario takes it: by default the run's, shared by all."""
        return ctx.paths[name]

    @abstractmethod
    async def measure(self, ctx: Context, path: ProxyPath) -> Metrics:
        """Measure one path; raise to record an error for it."""

    def timeout(self, ctx: Context) -> float:
        """The most one path may take before it is recorded as failed."""
        return 600.0


async def run_command(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> str:
    """Run a load generator; return its stdout, or raise with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{Path(cmd[0]).name} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{Path(cmd[0]).name} exited {proc.returncode}: {' | '.join(detail)}")
    return out.decode()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank, as wrk and ws_load.mjs report it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
