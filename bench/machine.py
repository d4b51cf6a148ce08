"""What the figures were measured on: the machine, and every program's version."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import psutil

from .backends import NODE_MODULES

ROOT = Path(__file__).resolve().parent.parent


def _output(cmd: list[str]) -> str:
    """The first line a command prints (stdout or stderr), or '' if it cannot run."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _os_name() -> str:
    with contextlib.suppress(OSError):
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        if match:
            return match.group(1)
    return platform.system()


def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _npm(name: str) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        version: str = json.loads((NODE_MODULES / name / "package.json").read_text())["version"]
        return version
    return None


def _relay_commit() -> str:
    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def describe(quick: bool) -> dict[str, Any]:
    memory = psutil.virtual_memory().total
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "aiohttp": _dist("aiohttp"),
        "relay": _dist("jupyter-relay"),
        "relay_commit": _relay_commit(),
        "jupyter_server": _dist("jupyter_server"),
        "ipykernel": _dist("ipykernel"),
        "jupyterlab": _dist("jupyterlab"),
        "jupyter_server_proxy": _dist("jupyter-server-proxy"),
        "configurable_http_proxy": _npm("configurable-http-proxy"),
        "jupyterlab_services": _npm("@jupyterlab/services"),
        "ws": _npm("ws"),
        "node": _output(["node", "--version"]),
        "nginx": _output(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": _output(["wrk", "-v"]).split(" [")[0],
        "curl": " ".join(_output(["curl", "--version"]).split()[:2]),
        "openssh": _output(["ssh", "-V"]).split(",")[0],
        "chromium": _output(["/usr/bin/chromium", "--version"]),
        "playwright": _dist("playwright"),
        "quick": quick,
    }
