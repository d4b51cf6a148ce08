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
from collections.abc import Iterable, Mapping
from pathlib import Path

PR_SET_PDEATHSIG = 1
GROUP_POLL = 0.05  # s between looks at whether a stopped group is empty


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


async def stop_process(
    proc: asyncio.subprocess.Process, grace: float, *, group: bool = False
) -> None:
    """SIGTERM (to its whole process group if `group`), then SIGKILL after `grace` seconds.

    With `group`, the group is signalled even when its leader has exited already: a
    shell's background children (or a server a wrapper forked) live on in it, and
    nothing else would stop them.
    """
    if not group:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        return
    # The leader's pid is the group's id (start_new_session); while a member lives,
    # the kernel does not hand that pid to another process.
    if not _signal_group(proc.pid, signal.SIGTERM) and proc.returncode is not None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), min(GROUP_POLL, deadline - loop.time()))
            continue
        if not _signal_group(proc.pid, 0):
            return
        await asyncio.sleep(GROUP_POLL)
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its credentials: not ours to signal
        return True
    return True


RELAY_ENV_PREFIX = "JUPYTER_RELAY_"  # its own settings, its token among them
MIN_SECRET_IN_VALUE = 16  # shorter secrets are matched only as a whole value


def scrubbed_environment(
    environ: Mapping[str, str], names: Iterable[str], secrets: Iterable[str]
) -> dict[str, str]:
    """`environ` without the relay's secrets, for a child that is not the relay's to trust.

    Drops the relay's own variables (`JUPYTER_RELAY_*`: its token among them), the
    variables backends' tokens are read from (`names`), and any variable holding a
    secret's value (a token exported under a name of the user's own).
    """
    hidden = set(names)
    values = [s for s in secrets if s]
    long = [s for s in values if len(s) >= MIN_SECRET_IN_VALUE]
    exact = set(values)
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith(RELAY_ENV_PREFIX)
        and key not in hidden
        and value.strip() not in exact
        and not any(secret in value for secret in long)
    }


def log_tail(path: Path | None, lines: int = 8, hide: tuple[str, ...] = ()) -> str:
    """The last lines of a child's log, indented, with `hide` values masked."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    for secret in hide:
        if secret:
            text = text.replace(secret, "***")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
