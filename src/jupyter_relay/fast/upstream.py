"""The upstream side of an exchange: the backend's answer, parsed, rewritten, streamed."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import httptools
from multidict import CIMultiDict

from .. import cors
from ..headers import (
    location_base,
    page_to_scrub,
    response_headers,
)
from ..responses import wire_head
from ..scrub import Scrubber
from ..translate import ClosedEarly
from .base import WRITE_HIGH

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pool import Pool

log = logging.getLogger("jupyter_relay.fast")


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to a backend; its answers are parsed as they arrive.

    The head is rewritten and sent once llhttp has parsed it; body bytes go on
    as llhttp hands them over (re-framed as chunks when the backend chunked
    them). The exchange is finished after `feed_data` returns, so nothing
    re-enters the parser.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.pool: Pool | None = None
        self.closed = False
        self.reused = False
        self.parser = httptools.HttpResponseParser(self)
        self.on_message_begin()
        self.message_done = False
        self.reusable = False

    # --- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.reason = b""
        self.head_sent = False
        self.informational = False
        self.chunked = False
        self.close_delimited = False
        # The client's connection closes after this answer (an HTTP/1.0 client's answer
        # whose length changed; the house's answer that says so).
        self.close_after = False
        self.scrubber: Scrubber | None = None
        self.held: list[bytes] | None = None  # body bytes while a veto is asked
        self.held_done = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            # Informational (100 Continue, 103 Early Hints): pass it on, then the real answer.
            self.informational = True
            ex.client.write(self._head_bytes(status, self.headers))
            return
        ex.status = status
        ex.got_head()
        vetoes = ex.up.vetoes
        if vetoes is not None:
            location = next((v for k, v in self.headers if k.lower() == "location"), None)
            if vetoes(status, location):
                # Held until the backend says whether this answer is its own (a hub's
                # "server not running" is not passed on); the body waits with it.
                self.held = []
                if self.transport is not None:
                    self.transport.pause_reading()
                ex.vet(status, location)
                return
        self._send_head(ex, status)

    def _send_head(self, ex: Exchange, status: int) -> None:
        lower = {k.lower(): v for k, v in self.headers}
        self.chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        no_body = status in (204, 304) or ex.head.method == "HEAD"
        self.close_delimited = not (self.chunked or "content-length" in lower or no_body)
        if ex.up.verbatim:
            # The house's answer as it is; CORS fields, like every answer's, the engine's.
            out = CIMultiDict(cors.without_cors(self.headers))
            self.close_after = "close" in lower.get("connection", "").lower()
        else:
            out = response_headers(
                self.headers,
                backend_origins=ex.up.origins,
                relay_is_https=ex.client.server.relay.scheme == "https",
                location_prefix=ex.up.location_prefix if 300 <= status < 400 else "",
                relay_cookie=ex.client.server.relay.cookie_name,
                cookie_scope=ex.up.cookie_scope,
                cookie_relative=bool(ex.up.strip_prefix),
                base_path=location_base(ex.path, ex.up.base_url.raw_path),
            )
        if (
            ex.up.secrets
            and page_to_scrub(lower.get("content-type", ""), lower.get("content-encoding"))
            and not no_body
        ):
            # A page the backend may have printed its token into streams through a
            # Scrubber; its length changes, so it goes chunked (or to the close).
            self.scrubber = Scrubber(ex.up.secrets)
            out.popall("Content-Length", None)
            self.chunked = not self.close_delimited
        if self.chunked and ex.head.http10:
            # HTTP/1.0 knows no chunks: the body goes as it is, ended by the close.
            self.chunked = False
            self.close_after = True
            out.popall("Transfer-Encoding", None)
        for name, value in ex.cors:
            out.add(name, value)
        if self.chunked and not no_body:
            out["Transfer-Encoding"] = "chunked"
        if self.close_delimited or self.close_after or not ex.head.keep_alive:
            out["Connection"] = "close"
        ex.client.write(self._head_bytes(status, out.items()))
        self.head_sent = True
        if ex.head.method == "HEAD":
            # No body follows, whatever the head says; llhttp would wait for one, so this
            # connection is not used again.
            self.message_done = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None or self.message_done:
            return
        if self.held is not None:
            self.held.append(bytes(body))
            return
        if self.scrubber is not None:
            body = self.scrubber.feed(bytes(body))
            if not body:
                return
        if self.chunked:
            ex.client.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            ex.client.write(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        ex = self.exchange
        if ex is None or self.message_done:
            return
        # llhttp forgets the message once this callback returns: ask now.
        reusable = self.parser.should_keep_alive()
        if self.held is not None:
            self.held_done = True
            self.reusable = reusable
            return
        self._end_message(ex, reusable)

    def _end_message(self, ex: Exchange, reusable: bool) -> None:
        if self.chunked:
            tail = self.scrubber.flush() if self.scrubber is not None else b""
            if tail:
                ex.client.write(b"%x\r\n%s\r\n" % (len(tail), tail))
            ex.client.write(b"0\r\n\r\n")
        elif self.scrubber is not None and not self.close_delimited:
            ex.client.write(self.scrubber.flush())  # an HTTP/1.0 client's page
        self.head_sent = True
        self.message_done = True
        self.reusable = reusable

    def release(self) -> None:
        """The veto passed: send the held answer on, and read the rest of it."""
        ex = self.exchange
        held, self.held = self.held or [], None
        if ex is None:
            return
        self._send_head(ex, ex.status)
        for body in held:
            self.on_body(body)
        if self.held_done and not self.message_done:
            self._end_message(ex, self.reusable)
        if self.transport is not None:
            self.transport.resume_reading()
        if self.message_done:
            self._finish(ex)

    # --- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(False)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # an answer nobody asked for: this connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            error = ConnectionError(f"backend '{ex.backend.name}' sent a malformed answer ({exc})")
            ex.fail(ex.failure(error))
            return
        if self.message_done:
            self._finish(ex)

    def _finish(self, ex: Exchange) -> None:
        keep_alive = not (self.close_delimited or self.close_after)
        self.message_done = False
        self.on_message_begin()  # nothing of this answer is pending any more
        ex.complete(upstream_reusable=self.reusable, client_keep_alive=keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        ex, self.exchange = self.exchange, None
        if ex is None or ex.done:
            return
        if not self.head_sent and self.reused and ex.can_retry():
            ex.retry()  # a kept-alive connection the backend had just closed: try a fresh one
        elif not self.head_sent:  # a dial refused late (an ssh helper's word) says so
            ex.fail(ex.failure(exc if isinstance(exc, ConnectionRefusedError) else ClosedEarly()))
        elif self.close_delimited:
            if self.scrubber is not None:
                ex.client.write(self.scrubber.flush())
            ex.complete(upstream_reusable=False, client_keep_alive=False)
        else:
            # Cut short mid-body: close the client's connection so it sees the truncation.
            ex.abort()
            ex.client.finished(keep_alive=False)

    def _head_bytes(self, status: int, headers: Any) -> bytes:
        reason = self.reason.decode("latin-1") or "OK"
        return wire_head(f"HTTP/1.1 {status} {reason}", headers)


# --- websockets --------------------------------------------------------------------------
