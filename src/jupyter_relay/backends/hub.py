"""The `hub` kind: a user's server on a JupyterHub, for clients that know no hubs.

IDEs call `/api/...`; the user's server lives at `/user/<name>[/<server>]/...`
on the hub, behind TLS that is often signed by the cluster's own CA. The relay
asks the Hub's REST API where the server is (learning the user from the token
if none is given), starts it if it is stopped and follows the spawn's progress
events on the terminal, then forwards every request under that prefix with
`Authorization: token <hub API token>`. Paths that already carry the prefix
(pages served by the hub put it in their page config) pass as they are.

While it runs: a token file that changes is read again (a renewed token needs
no restart); a server the hub culls is noticed on the next request, which gets
a 503 saying so, and, unless `--start-server never`, the server is started
again. Requests to it go through aiohttp rather than the fast path, so every
answer can be looked at for the hub's "server not running".

Here: the backend's life, pointing requests at the server, and looking at
its answers. The Hub API calls are `hub_api`; starting the server and
following its progress, `hub_spawn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any

from yarl import URL

from ..credentials import Secret
from ..errors import (
    BackendAuthError,
    BackendError,
    BackendStartError,
    BackendUnreachable,
    ConfigError,
)
from ..logs import add_secret
from .base import Progress, Upstream
from .hub_spawn import HubSpawn

log = logging.getLogger("jupyter_relay.hub")

TOKEN_POLL = 2.0  # seconds between looks at a token file
RETRY_SPACING = 5.0  # seconds between attempts to find the server again, asked by requests
STOPPED_STATUSES = frozenset({424, 503})


class HubBackend(HubSpawn):
    """Asks the Hub API (`HubApi`), starts the server (`HubSpawn`), serves it, and watches."""

    kind = "hub"
    check_path = "api/status"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.spec.hub is not None and self.spec.url is not None
        self.target = self.spec.hub
        self.hub_url: URL = self.spec.url  # scheme://host:port/prefix/
        self.user: str | None = self.target.user
        self._token: Secret | None = None
        self._token_stamp: float | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._problem: BackendError | None = None  # why requests fail right now
        self._last_try = 0.0
        self.server_starts = 0  # times the hub was asked to start the server (/relay/metrics)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, progress: Progress) -> None:
        try:
            token = self.spec.token.read()
        except ConfigError as exc:
            file = self.spec.token.file
            hint = (
                f"write it into {file}"
                if file is not None
                else f"export {self.spec.token.env or 'JUPYTERHUB_API_TOKEN'}, or give token_file="
            )
            raise BackendAuthError(
                self.name,
                f"backend '{self.name}': no hub API token: {exc.message}. Make one at "
                f"{self.token_page} and {hint}",
            ) from exc
        self._token = token
        self._token_stamp = self._stamp()
        self._open(self.hub_url, token)
        self._watcher = asyncio.create_task(self._watch_token())
        progress(f"backend '{self.name}': asking the hub at {self.hub_url} for the server")
        try:
            await self._find_or_start(progress)
        except BackendError as exc:
            # Not fatal, as for a Jupyter at a URL: requests say why, and try again.
            self._problem = exc
            self._last_try = time.monotonic()
            said = "tries again" in exc.message
            progress(exc.message if said else f"{exc.message}; trying again when a request comes")

    async def stop(self) -> None:
        for task in (self._watcher, self._starting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await super().stop()

    @property
    def problem(self) -> BackendError | None:
        """Why requests fail right now (None: they are forwarded)."""
        return self._problem

    def explain(self, error: BackendError) -> BackendError:
        """As for any TLS backend; and a connection the hub drops may be our certificate.

        A proxy that refuses a client certificate resets or closes the connection
        (which of the two depends on timing), or sends a TLS alert (see forward).
        """
        error = super().explain(error)
        cert = self.spec.tls.client_cert
        if (
            cert is not None
            and type(error) is BackendUnreachable
            and self.hub_url.scheme == "https"
            and ("reset" in error.message.lower() or error.detail == "closed the connection")
        ):
            return BackendUnreachable(
                self.name,
                f"{error.message}; if the hub checks client certificates, it refused "
                f"{cert}: give one that its CA issued with --client-cert and --client-key "
                "(or client_cert=, client_key= in the URI)",
                error.detail,
            )
        return error

    # --- finding the server -------------------------------------------------------------

    async def _find_or_start(self, progress: Progress) -> None:
        """Point the upstream at the user's server, starting it first if it is stopped."""
        if self.user is None:
            self.user = await self._whoami()
        server = await self._server_model()
        if server is not None and server.get("pending") == "stop":
            server = await self._wait_stopped(progress)
        if server is not None and server.get("ready") and server.get("url"):
            self._serve(str(server["url"]))
            progress(f"backend '{self.name}': {self.server_label} runs at {server['url']}")
            return
        if not self.target.start_server and server is None:
            raise BackendStartError(
                self.name,
                f"backend '{self.name}': {self.server_label} is stopped, and --start-server "
                f"never is set; start it at {self.home_page}",
            )
        await self._start_server(progress, already=server is not None)

    async def _start_server(self, progress: Progress, *, already: bool) -> None:
        if not already:
            progress(f"backend '{self.name}': {self.server_label} is stopped; starting it")
            self.server_starts += 1
            await self._ask_to_start()
        url = await self._follow_progress(progress)
        self._serve(url)
        progress(f"backend '{self.name}': {self.server_label} is ready at {url}")

    def _serve(self, server_url: str) -> None:
        """Send requests under the server's prefix on the hub from now on."""
        up = super().upstream()
        path = server_url if server_url.endswith("/") else server_url + "/"
        if not path.startswith("/"):
            path = URL(path).raw_path
        base = up.base_url.with_path(path, encoded=True)
        # The engine shows this backend the answers that may be the hub's "server not running".
        self._upstream = replace(up, base_url=base, vetoes=self._may_veto)
        self._problem = None

    def _may_veto(self, status: int, location: str | None) -> bool:
        """Could this answer be the hub's rather than the server's? (`answered` decides.)"""
        into_hub = location is not None and URL(location).path.startswith(
            self.hub_url.path + "hub/"
        )
        return (
            status in (401, 403) or status in STOPPED_STATUSES or (300 <= status < 400 and into_hub)
        )

    # --- while running ------------------------------------------------------------------

    def upstream(self) -> Upstream:
        problem = self._problem
        if problem is not None:
            if time.monotonic() - self._last_try >= RETRY_SPACING:
                self._try_again()
            raise problem
        return super().upstream()

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        """Look at an answer from the hub: is it the hub saying the server is gone?

        The hub says so with 424 (503 in its legacy mode) or a redirect into
        `/hub/`. An app behind the server may answer 503 too, so the Hub API is
        asked whether the server still runs before the answer is replaced. A 401
        or 403 (or that redirect to the hub's login) may mean the hub no longer
        takes the token: asked the same way, the hub then says so.
        """
        up = self._upstream
        if up is None or up.base_url.path == self.hub_url.path:
            return None
        into_hub = location is not None and URL(location).path.startswith(
            self.hub_url.path + "hub/"
        )
        refused = status in (401, 403)
        if not self._may_veto(status, location):
            return None
        try:
            server = await self._server_model()
        except BackendAuthError as exc:  # the token: revoked, expired
            self._problem = exc
            self._last_try = time.monotonic()
            log.warning("%s", exc.message)
            return exc
        except BackendError:
            return None  # when in doubt, pass the answer on
        if server is not None and server.get("ready"):
            # Running: the server said no itself. A token without access:servers is.
            no_access = await self._access_refusal() if refused or into_hub else None
            if no_access is not None:
                log.warning("%s", no_access.message)
            return no_access
        if refused:
            return None
        if self.target.start_server:
            message = (
                f"backend '{self.name}': {self.server_label} stopped by the hub; starting it "
                "again (its progress is in the relay's log): retry in a few seconds"
            )
        else:
            message = (
                f"backend '{self.name}': {self.server_label} stopped by the hub; start it at "
                f"{self.home_page} (--start-server never), and the relay serves it again"
            )
        problem = BackendStartError(self.name, message)
        self._problem = problem
        self._try_again()
        return problem

    def _try_again(self) -> None:
        """Find (and unless told not to, start) the server again, in the background."""
        if self._starting is not None and not self._starting.done():
            return
        self._last_try = time.monotonic()
        self._starting = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        try:
            await self._find_or_start(lambda message: log.info("%s", message))
        except BackendError as exc:
            self._problem = exc
            log.warning("%s", exc.message)
        else:
            log.warning("backend '%s': %s is being served again", self.name, self.server_label)

    def _stamp(self) -> float | None:
        path = self.spec.token.file
        if path is None:
            return None
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    async def _watch_token(self) -> None:
        """Read a token file again when it changes: a renewed token needs no restart."""
        while True:
            await asyncio.sleep(TOKEN_POLL)
            stamp = self._stamp()
            if stamp is None or stamp == self._token_stamp:
                continue
            self._token_stamp = stamp
            try:
                token = self.spec.token.read()
            except ConfigError as exc:
                log.warning("backend '%s': %s", self.name, exc.message)
                continue
            if token is None or (self._token and token.value == self._token.value):
                continue
            self._token = token
            add_secret(token.value)
            up = self._upstream
            if up is not None:
                kept = [(k, v) for k, v in up.credentials if k.lower() != "authorization"]
                credentials = (*kept, ("Authorization", f"token {token.value}"))
                self._upstream = replace(
                    up, credentials=credentials, secrets=(*up.secrets, token.value.encode())
                )
            log.warning("backend '%s': read a new token from %s", self.name, self.spec.token.file)
            if self._problem is not None:
                self._try_again()  # it may be what was wrong: no need to wait for a request
