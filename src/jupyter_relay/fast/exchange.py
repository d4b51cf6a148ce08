"""One plain request forwarded to a pooled upstream connection, and its answer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from ..backends.base import Target, Upstream
from ..errors import BackendError
from ..logs import access_level
from .base import Forwarding
from .head import Head
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .client import ClientConnection
    from .pool import Pool

log = logging.getLogger("jupyter_relay.fast")
access_log = logging.getLogger("jupyter_relay.access")
# Request body bytes an exchange holds while it waits for an upstream connection.
PENDING_BODY_LIMIT = 1024 * 1024


class Exchange(Forwarding):
    """One request forwarded on the fast path, and its answer."""

    def __init__(
        self,
        client: ClientConnection,
        backend: Target,
        up: Upstream,
        head: Head,
        path: str,
        query: str,
    ) -> None:
        super().__init__(client, backend, up, head, path, query)
        self.started = client.loop.time()
        self.body_left = head.content_length
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.done = False
        self.task: asyncio.Future[None] | None = None
        self.retried = False

    def begin(self, body: bytes) -> None:
        self.body_left -= len(body)
        pool = self.client.server.pool(self.backend.name)
        conn = pool.take()
        if conn is not None:
            self._attach(conn, body)
            return
        if body:
            self._stash(body)
        self.task = asyncio.ensure_future(self._connect(pool))

    async def _connect(self, pool: Pool) -> None:
        assert self.up.open_raw is not None
        try:
            _, protocol = await self.up.open_raw(UpstreamConnection)
        except (OSError, TimeoutError) as exc:
            if not self.done:
                address = self.up.host_header
                self.fail(self.failure(exc, address))
            return
        conn = cast(UpstreamConnection, protocol)
        conn.pool = pool
        if self.done:
            pool.give(conn)
            return
        pending, self.pending = self.pending or [], None
        self._attach(conn, b"".join(pending))

    def _attach(self, conn: UpstreamConnection, body: bytes) -> None:
        self.pending = None
        self.conn = conn
        conn.exchange = self
        conn.write(self.request_head + body if body else self.request_head)
        if self.body_left == 0:
            self._start_clock()
        if self.client.paused & {"pending"}:
            self.client.resume("pending")

    def can_retry(self) -> bool:
        """Nothing is lost by sending again: no body, no answer yet, not retried."""
        return self.head.content_length == 0 and self.status == 0 and not self.retried

    def retry(self) -> None:
        self.retried = True
        self.conn = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending = []
        self.task = asyncio.ensure_future(self._connect(self.client.server.pool(self.backend.name)))

    def _stash(self, data: bytes) -> None:
        assert self.pending is not None
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_BODY_LIMIT:
            self.client.pause("pending")

    def send_body(self, data: bytes) -> None:
        self.body_left -= len(data)
        if self.conn is not None:
            self.conn.write(data)
            if self.body_left == 0:
                self._start_clock()
        else:
            self._stash(data)

    def _start_clock(self) -> None:
        # The backend is timed once it has the whole request, not while the client uploads.
        if self.timer is None and not self.done:
            self.timer = self.client.loop.call_later(
                self.client.server.relay.config.backend_timeout, self._timed_out
            )

    def _timed_out(self) -> None:
        self.timer = None
        if self.status == 0:
            self.fail(self.failure(TimeoutError()))

    def got_head(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def client_paused(self, paused: bool) -> None:
        if self.conn is not None and self.conn.transport is not None:
            if paused:
                self.conn.transport.pause_reading()
            else:
                self.conn.transport.resume_reading()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause("upstream")
        else:
            self.client.resume("upstream")

    def fail(self, error: BackendError) -> None:
        """Answer with the error if nothing was sent yet; close both sides."""
        sent = self.status != 0
        self._end()
        if self.conn is not None:
            self.conn.close()
        if sent:
            log.warning("%s %s: %s", self.head.method, self.path, error.message)
        else:
            self.client.write(self.error_answer(error))
            self._log(error.status)
        self.client.finished(keep_alive=False)

    def complete(self, upstream_reusable: bool, client_keep_alive: bool) -> None:
        conn = self.conn
        self._end()
        if conn is not None:
            conn.exchange = None
            if upstream_reusable and self.body_left == 0 and conn.pool is not None:
                conn.pool.give(conn)
            else:
                conn.close()
        self._log(self.status)
        keep_alive = client_keep_alive and self.head.keep_alive and self.body_left == 0
        self.client.finished(keep_alive=keep_alive)

    def abort(self) -> None:
        """The client went away: drop the upstream connection, whose answer is unread."""
        self._end()
        if self.conn is not None:
            self.conn.exchange = None
            self.conn.close()

    def _end(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _log(self, status: int) -> None:
        level = access_level(status)
        if access_log.isEnabledFor(level):
            elapsed = (self.client.loop.time() - self.started) * 1000
            path = self.path.partition("?")[0]
            access_log.log(level, "%s %s %d %.1fms (fast)", self.head.method, path, status, elapsed)
