"""What an exchange and a tunnel share: the request, where it goes, how to refuse it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..backends.base import Target, Upstream
from ..errors import BackendError
from ..responses import answer_of, error_bytes
from ..routes import Road
from ..translate import translate_client_error
from .head import Head, upstream_head

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("jupyter_relay.fast")

PIPELINE_LIMIT = 256 * 1024
# Write buffer high-water mark: with asyncio's 64 KiB, a 1 GiB download paused and
# resumed the backend thousands of times a second (0.74 GB/s here); 1 MiB: 1.4 GB/s.
WRITE_HIGH = 1024 * 1024


class Forwarding:
    """What an exchange and a tunnel share: the request, where it goes, how to refuse it."""

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
        self.client = client
        self.backend = backend
        self.road = road  # for the metrics
        self.meter = client.server.relay.meter
        self.answered = 0  # the status of an answer of the relay's own, once written
        self.up = up
        self.head = head
        # An allowed origin's fields, on every answer the engine writes or passes on.
        self.cors = client.cors_fields(head)
        self.request_head = (
            head.raw if up.verbatim else upstream_head(client, up, head, path, query)
        )
        self.path = path

    def failure(self, exc: BaseException, address: str | None = None) -> BackendError:
        """The relay's error for a failure on the way to the backend, in its own words."""
        return self.backend.explain(translate_client_error(self.backend.name, exc, address))

    async def veto(self, status: int, location: str | None) -> BackendError | None:
        """The backend's word on an answer it may veto (`Upstream.vetoes`); None: pass it on.

        Asking that fails passes the answer on as it came.
        """
        try:
            return await self.backend.answered(status, location)
        except Exception as exc:
            log.debug("asking %s about its %d: %s", self.backend.name, status, exc)
            return None

    def error_answer(self, error: BackendError) -> bytes:
        """The relay's error answer (JSON or an escaped page), closing the connection."""
        log.warning("%s %s: %s", self.head.method, self.path, error.message)
        status, reason = answer_of(error)
        return self.answer(status, error.message, reason)

    def answer(self, status: int, message: str, reason: str) -> bytes:
        self.answered = status
        accept = self.head.index.get("accept", "")
        fields = dict(self.cors)
        return error_bytes(self.path, self.head.method, accept, status, message, reason, fields)
