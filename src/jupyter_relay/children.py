"""Child processes the relay starts (a local Jupyter server, named apps): never outliving it.

Each runs in its own session, so a Ctrl-C in the terminal reaches only the
relay, which then stops its children in order; and each is told by the
kernel to terminate if the relay dies (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


async def stop_process(
    proc: asyncio.subprocess.Process, grace: float, *, group: bool = False
) -> None:
    """SIGTERM (to its whole process group if `group`), then SIGKILL after `grace` seconds."""
    if proc.returncode is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        send(signal.SIGKILL)
        await proc.wait()
    if group:  # what the leader left behind in its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def log_tail(path: Path | None, lines: int = 8, hide: tuple[str, ...] = ()) -> str:
    """The last lines of a child's log, indented, with `hide` values masked."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    for secret in hide:
        if secret:
            text = text.replace(secret, "***")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
