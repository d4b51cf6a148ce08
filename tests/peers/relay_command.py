"""The relay command line the peers tier starts, in one place (fixtures and probe)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def relay_command(token: str, backend: str, state_dir: str, extra: Sequence[str] = ()) -> list[str]:
    """`python -m jupyter_relay` on a free port in front of `backend` (named `t`)."""
    return [
        sys.executable,
        "-m",
        "jupyter_relay",
        "--port",
        "0",
        "--token",
        token,
        "--backend",
        f"t={backend}",
        "--log-level",
        "warning",
        "--state-dir",
        state_dir,
        *extra,
    ]
