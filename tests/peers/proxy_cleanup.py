"""A pytest plugin: jupyter-server-proxy's test session ends the processes it started.

Loaded by `scripts/peers` in both proxy passes (`-p proxy_cleanup`, this directory on
PYTHONPATH). The sdist's `a_server` fixture stops its Jupyter server through the API,
and the server leaves the apps it launched for the tests (tests/resources/httpinfo.py,
websocket.py, ... copied under the session's temporary directory) running, orphaned;
a server whose start timed out is left running too. At the end of the session, every
process whose command line or working directory is under this session's temporary
directory is ended: those are this session's and no one else's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def started_under(base: Path) -> list[psutil.Process]:
    """The processes whose command line or working directory is under `base`."""
    mine: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.pid == psutil.Process().pid:
            continue
        cmdline = " ".join(proc.info["cmdline"] or ())
        cwd = proc.info["cwd"] or ""
        if str(base) in cmdline or Path(cwd).is_relative_to(base):
            mine.append(proc)
    return mine


def end(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL what is left after GRACE; the processes that survive both."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=GRACE)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=GRACE)
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="session", autouse=True)
def peers_end_started_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Set up before the session's servers, so torn down after them."""
    base = tmp_path_factory.getbasetemp().resolve()
    yield
    left = started_under(base)
    if left:
        print(f"\n--- ending {len(left)} processes the session left under {base} ---")
        survivors = end(left)
        assert not survivors, f"processes that survived SIGKILL: {survivors}"
