"""What to do with a kernel started for a session that was never completed: pure rules.

A relay records a kernel as pending (`held.Pending`) before it asks a gateway
to start it, and settles the record when the session is saved. A record still
pending is looked at by every relay sharing the store, at start-up and every
RECONCILE_INTERVAL seconds, and `verdict` decides:

- its relay still runs and its start may still be under way: wait;
- its kernel is not on the gateway: wait until the start has surely ended (the
  gateway may be launching it: on a cluster that takes minutes), then forget it;
- its kernel runs, for a new session whose path no other session holds: re-bind
  it, that is save the session, so it is listed and the client's retry for that
  path gets it (Jupyter answers a second session for a path with the first);
- otherwise (a kernel change the client never saw, the path taken by a session
  made since, a dead kernel): shut the kernel down.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True)
class Pending:
    """A kernel being started for a session: recorded before the start is sent.

    `change` is true when it replaces a session's kernel (a PATCH, or a move to the
    gateway) rather than creating a session. `owner` is `host:pid` of the relay
    starting it; `deadline` (epoch seconds) is when its start has surely ended.
    """

    kernel_id: str
    url: str
    backend: str
    session_id: str
    path: str | None
    name: str | None
    type: str | None
    change: bool
    owner: str
    deadline: float

    def record(self, backend: str) -> Record:
        """The session this kernel was started for, as a held record."""
        return {
            "id": self.session_id,
            "backend": backend,
            "url": self.url,
            "path": self.path,
            "name": self.name,
            "type": self.type,
            "kernel_id": self.kernel_id,
        }


# Every relay sharing the store looks at pending records this often. A record only
# outlives a relay that died (or lost its gateway) mid-start, which is rare, and the
# kernel it leaves costs one slot until then; a minute bounds that cost, and a restarted
# relay (the usual case) reconciles at once.
RECONCILE_INTERVAL = 60.0


class Verdict(enum.Enum):
    WAIT = "wait"
    REBIND = "re-bound to its session"
    SHUT_DOWN = "shut down"
    FORGET = "forgotten"


@dataclass(frozen=True)
class Seen:
    """What a relay found about a pending record's kernel and session, now."""

    now: float
    owner_alive: bool
    kernel: dict[str, Any] | None  # the gateway's model; None: it has no such kernel
    session_kernel: str | None  # the kernel of a saved session with the record's id
    path_taken: bool  # another saved session on that gateway has the record's path


def verdict(pending: Pending, seen: Seen) -> tuple[Verdict, str]:
    """What to do with `pending`, and why (for the log and the status page)."""
    if seen.owner_alive and seen.now < pending.deadline:
        return Verdict.WAIT, "its relay is still starting it"
    if seen.kernel is None:
        if seen.now < pending.deadline:
            return Verdict.WAIT, "the gateway may still be starting it"
        return Verdict.FORGET, "the gateway never started it"
    if seen.session_kernel == pending.kernel_id:
        return Verdict.FORGET, "its session was saved"
    if pending.change:
        return Verdict.SHUT_DOWN, "the kernel change it was started for never completed"
    if seen.session_kernel is not None or seen.path_taken:
        return Verdict.SHUT_DOWN, "another session holds its notebook now"
    if seen.kernel.get("execution_state") == "dead":
        return Verdict.SHUT_DOWN, "it is dead"
    return Verdict.REBIND, "its session's creation never completed"
