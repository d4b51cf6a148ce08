"""One plain request forwarded to a pooled upstream connection, and its answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..backends.base import Target, Upstream
from ..errors import BackendError
from ..logs import log_access
from ..responses import answer_of
from ..routes import Road
from .base import Forwarding
from .chunked import BadChunk, ChunkedReader
from .head import Head
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .client import ClientConnection
    from .pool import Pool

log = logging.getLogger("jupyter_relay.fast")
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
        road: Road,
    ) -> None:
        super().__init__(client, backend, up, head, path, query, road)
        self.started = client.loop.time()
        self.head_at = 0.0  # when the backend's answer head came (its latency, for metrics)
        self.reader = ChunkedReader() if head.chunked else None
        # Body bytes still to come from the client (for a chunked body: 1 until its end).
        self.body_left = 1 if head.chunked else head.content_length
        self.pending: list[bytes] | None = []
        self.pending_size = 0
        self.conn: UpstreamConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.done = False
        self.task: asyncio.Future[None] | None = None
        self.retried = False

    def begin(self, data: bytes) -> int:
        """Send the request on; return how many bytes of `data` were its body."""
        pool = self.client.server.pool(self.backend.name)
        conn = pool.take()
        if conn is not None:
            self._attach(conn)
        else:
            self.task = asyncio.ensure_future(self._connect(pool))
        return self.take(data) if self.body_left and data else 0

    async def _connect(self, pool: Pool) -> None:
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
        self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        pending, self.pending = self.pending or [], None
        self.conn = conn
        conn.exchange = self
        conn.write(self.request_head + b"".join(pending) if pending else self.request_head)
        if self.body_left == 0:
            self._start_clock()
        if self.client.paused & {"pending"}:
            self.client.resume("pending")

    def can_retry(self) -> bool:
        """Nothing is lost by sending again: no body, no answer yet, not retried."""
        no_body = self.head.content_length == 0 and self.reader is None
        return no_body and self.status == 0 and not self.retried

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

    def take(self, data: bytes) -> int:
        """Send on what of `data` is this request's body; return how many bytes that was."""
        if self.reader is None:
            taken = min(self.body_left, len(data))
            out = data[:taken]
            self.body_left -= taken
        else:
            try:
                out, taken = self.reader.feed(data)
            except BadChunk as exc:
                self.refuse(400, "Bad Request", f"the chunked request body is broken: {exc}")
                return len(data)
            if self.reader.done:
                self.body_left = 0
        if self.conn is not None:
            if out:
                self.conn.write(out)
            if self.body_left == 0:
                self._start_clock()
        elif out:
            self._stash(out)
        return taken

    def _start_clock(self) -> None:
        # The backend is timed once it has the whole request, not while the client uploads.
        # The house is not: it bounds its own calls to backends, and says which one failed.
        if self.timer is None and not self.done and not self.up.verbatim:
            self.timer = self.client.loop.call_later(
                self.client.server.relay.backend_timeout, self._timed_out
            )

    def _timed_out(self) -> None:
        self.timer = None
        if self.status == 0:
            self.fail(self.failure(TimeoutError()))

    def got_head(self) -> None:
        self.head_at = self.client.loop.time()
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

    def vet(self, status: int, location: str | None) -> None:
        """Ask the backend whether an answer is its own (`Upstream.vetoes`), then go on."""
        self.task = asyncio.ensure_future(self._vetted(status, location))

    async def _vetted(self, status: int, location: str | None) -> None:
        error = await self.veto(status, location)
        if self.done or self.conn is None:
            return
        if error is not None:
            self.status = 0  # nothing was sent: the relay answers instead
            self.fail(error)
        else:
            self.conn.release()

    def refuse(self, status: int, reason: str, message: str) -> None:
        """The client's request cannot go on (its body is broken): say so, close both."""
        self._give_up(lambda: self.answer(status, message, reason), status)

    def fail(self, error: BackendError) -> None:
        """Answer with the error if nothing was sent yet; close both sides."""
        if self.status != 0:
            log.warning("%s %s: %s", self.head.method, self.path, error.message)
        self._give_up(lambda: self.error_answer(error), answer_of(error)[0])

    def _give_up(self, answer: Callable[[], bytes], status: int) -> None:
        """Close both sides; the client gets `answer` unless part of an answer went out."""
        sent = self.status != 0
        self._end()
        if self.conn is not None:
            self.conn.exchange = None
            self.conn.close()
        if sent:
            self._count(self.status)  # cut off mid-answer: counted with the status it had
        else:
            self.client.write(answer())
            self._log(status)
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
        self._count(self.status)
        if self.conn is not None:
            self.conn.exchange = None
            self.conn.close()

    def _end(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _log(self, status: int) -> None:
        elapsed = (self.client.loop.time() - self.started) * 1000
        log_access(self.head.method, self.path.partition("?")[0], status, elapsed)
        self._count(status)

    def _count(self, status: int) -> None:
        latency = self.head_at - self.started if self.head_at else None
        self.meter.observe(self.road, self.backend.name, status, latency)
