"""Kernels started for sessions that were never completed, found and dealt with.

Each relay sharing a state directory looks at the pending records of the
gateways it fronts (matched by URL) when it starts and every
`orphans.RECONCILE_INTERVAL` seconds, and acts on `orphans.verdict`: it re-binds
the kernel to its session, shuts it down, or forgets a start that never
happened. Two relays never both act on one record: the one that takes it from
the store (`held.settle`) acts. What was done is logged and kept for the status
page (`Reconciling.reconciled`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from ..errors import BackendError
from . import held, orphans
from .sessions import Sessions

log = logging.getLogger("jupyter_relay.mixer")
KEPT = 20  # actions the status page shows


class Reconciling(Sessions):
    """Sessions, and the reconciling of kernels started for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (epoch seconds, what was done), newest last.
        self.reconciled: deque[tuple[float, str]] = deque(maxlen=KEPT)
        self.pending_starts = 0  # records left waiting by the latest pass

    async def reconcile(self) -> list[str]:
        """One pass over the pending records; what it did, one line each."""
        by_url = {self._url(b): b for b in self.backends if self._holds(b)}
        done: list[str] = []
        waiting = 0
        for pending in await self.held.all_pending():
            backend = by_url.get(pending.url)
            if backend is None:  # a gateway this relay does not front: its relays will
                continue
            try:
                action = await self._reconcile_one(backend, pending)
            except BackendError as exc:
                log.warning("cannot reconcile kernel %s yet: %s", pending.kernel_id, exc.message)
                waiting += 1
                continue
            if action is None:
                waiting += 1
            elif action:
                done.append(action)
        self.pending_starts = waiting
        for line in done:
            log.warning("reconciled: %s", line)
            self.reconciled.append((time.time(), line))
        return done

    async def _reconcile_one(self, backend: str, pending: held.Pending) -> str | None:
        """Act on one record: a line saying what was done, "" if another relay did, None
        if it waits."""
        answer = await self._call(backend, "GET", f"api/kernels/{pending.kernel_id}")
        if not answer.ok and answer.status != 404:
            raise BackendError(backend, f"backend '{backend}' answered {answer.status}")
        kernel = self._object(backend, answer) if answer.ok else None
        session = await self.held.get(pending.session_id)
        others = await self.held.of(pending.url)
        seen = orphans.Seen(
            now=time.time(),
            owner_alive=held.owner_alive(pending.owner),
            kernel=kernel,
            session_kernel=str(session["kernel_id"]) if session else None,
            path_taken=any(
                r["path"] == pending.path and r["id"] != pending.session_id for r in others
            ),
        )
        verdict, why = orphans.verdict(pending, seen)
        if verdict is orphans.Verdict.WAIT:
            return None
        record = pending.record(backend) if verdict is orphans.Verdict.REBIND else None
        if not await self.held.settle(pending.kernel_id, record):
            return ""  # another relay took it
        if verdict is orphans.Verdict.SHUT_DOWN:
            await self._end_kernel(backend, pending.kernel_id)
        elif verdict is orphans.Verdict.REBIND:
            self._started(backend, pending.kernel_id)
        where = f"kernel {pending.kernel_id} on {backend} for session {pending.session_id}"
        path = f" ({pending.path})" if pending.path else ""
        return f"{where}{path}: {verdict.value}, since {why}"
