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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..credentials import Secret
from ..errors import (
    BackendAuthError,
    BackendError,
    BackendStartError,
    BackendTimeout,
    ConfigError,
)
from ..logs import add_secret
from .base import HttpBackend, Progress, Upstream

log = logging.getLogger("jupyter_relay.hub")

TOKEN_POLL = 2.0  # seconds between looks at a token file
RETRY_SPACING = 5.0  # seconds between attempts to find the server again, asked by requests
API_TIMEOUT = 30.0
STOPPED_STATUSES = frozenset({424, 503})


class HubBackend(HttpBackend):
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

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, progress: Progress) -> None:
        try:
            token = self.spec.token.read()
        except ConfigError as exc:
            raise BackendAuthError(
                self.name,
                f"backend '{self.name}': no hub API token: {exc.message}. Make one at "
                f"{self.token_page} and export JUPYTERHUB_API_TOKEN, or give token_file=",
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
            progress(f"{exc.message}; trying again when a request comes")

    async def stop(self) -> None:
        for task in (self._watcher, self._starting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await super().stop()

    @property
    def token_page(self) -> str:
        return str(self.hub_url / "hub/token")

    @property
    def server_label(self) -> str:
        who = self.user or "?"
        return f"{who}'s server '{self.target.server}'" if self.target.server else f"{who}'s server"

    # --- the Hub API --------------------------------------------------------------------

    async def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        from ..forward import translate_client_error

        up = super().upstream()
        url = URL(str(self.hub_url) + "hub/api/" + path, encoded=True)
        headers = dict(up.credentials)
        try:
            async with asyncio.timeout(API_TIMEOUT):
                async with up.session.request(
                    method,
                    url,
                    headers=headers,
                    json=body,
                    server_hostname=up.server_hostname,
                    allow_redirects=False,
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.explain(translate_client_error(self.name, exc)) from exc
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            data = None
        if status in (401, 403) and method == "GET":
            raise BackendAuthError(
                self.name,
                f"backend '{self.name}': the hub refused the API token from "
                f"{self.spec.token.describe()} (HTTP {status}); make a new one at "
                f"{self.token_page} and put it there",
            )
        return status, data

    def _server_path(self) -> str:
        assert self.user is not None
        user = quote(self.user, safe="")
        if self.target.server:
            return f"users/{user}/servers/{quote(self.target.server, safe='')}"
        return f"users/{user}/server"

    async def _find_or_start(self, progress: Progress) -> None:
        """Point the upstream at the user's server, starting it first if it is stopped."""
        if self.user is None:
            status, data = await self._api("GET", "user")
            if status != 200 or not isinstance(data, dict) or not data.get("name"):
                raise BackendError(self.name, f"backend '{self.name}': the hub answered {status}")
            self.user = str(data["name"])
        status, data = await self._api("GET", f"users/{quote(self.user, safe='')}")
        if status == 404:
            raise BackendError(
                self.name, f"backend '{self.name}': the hub has no user {self.user!r}"
            )
        if status != 200 or not isinstance(data, dict):
            raise BackendError(
                self.name, f"backend '{self.name}': the hub answered {status} for the user"
            )
        server = (data.get("servers") or {}).get(self.target.server)
        if isinstance(server, dict) and server.get("ready") and server.get("url"):
            self._serve(str(server["url"]))
            progress(f"backend '{self.name}': {self.server_label} runs at {server['url']}")
            return
        if not self.target.start_server and not (
            isinstance(server, dict) and server.get("pending")
        ):
            raise BackendStartError(
                self.name,
                f"backend '{self.name}': {self.server_label} is stopped, and --start-server "
                f"never is set; start it at {self.hub_url / 'hub/home'}",
            )
        await self._start_server(progress, already=isinstance(server, dict))

    async def _start_server(self, progress: Progress, *, already: bool) -> None:
        if not already:
            progress(f"backend '{self.name}': {self.server_label} is stopped; starting it")
            status, data = await self._api("POST", self._server_path())
            if status == 403:
                raise BackendAuthError(
                    self.name,
                    f"backend '{self.name}': the token from {self.spec.token.describe()} may not "
                    f"start {self.server_label} (HTTP 403: it lacks the servers scope); "
                    f"make a token with it at {self.token_page}, or start the server there",
                )
            if status not in (201, 202, 400):  # 400: it was started meanwhile
                raise BackendStartError(
                    self.name,
                    f"backend '{self.name}': the hub did not start {self.server_label}: "
                    f"{_hub_message(data, status)}",
                )
        url = await self._follow_progress(progress)
        self._serve(url)
        progress(f"backend '{self.name}': {self.server_label} is ready at {url}")

    async def _follow_progress(self, progress: Progress) -> str:
        """Print the spawn's progress events; return the server's URL when it is ready."""
        up = super().upstream()
        url = URL(str(self.hub_url) + "hub/api/" + self._server_path() + "/progress", encoded=True)
        headers = {**dict(up.credentials), "Accept": "text/event-stream"}
        last_message = ""
        try:
            async with asyncio.timeout(self.timeouts.start):
                async with up.session.get(
                    url, headers=headers, server_hostname=up.server_hostname
                ) as resp:
                    if resp.status != 200:
                        raise BackendStartError(
                            self.name,
                            f"backend '{self.name}': cannot follow the start of "
                            f"{self.server_label} (HTTP {resp.status})",
                        )
                    async for line in resp.content:
                        event = _event(line)
                        if event is None:
                            continue
                        message = str(event.get("message") or "").strip()
                        if message and message != last_message:
                            last_message = message
                            percent = event.get("progress")
                            shown = f"{percent}% " if isinstance(percent, int) else ""
                            progress(f"backend '{self.name}': {shown}{message}")
                        if event.get("failed"):
                            raise BackendStartError(
                                self.name,
                                f"backend '{self.name}': the hub could not start "
                                f"{self.server_label}: {message or 'spawn failed'}",
                            )
                        if event.get("ready"):
                            return str(event.get("url") or "")
        except TimeoutError as exc:
            raise BackendTimeout(
                self.name,
                f"backend '{self.name}': {self.server_label} did not start within "
                f"{self.timeouts.start:g} s (--start-timeout); last from the hub: "
                f"{last_message or 'nothing'}",
            ) from exc
        except aiohttp.ClientError as exc:
            raise BackendStartError(
                self.name, f"backend '{self.name}': lost the hub while it started the server: {exc}"
            ) from exc
        # The stream ended without "ready": ask where the server is now.
        status, data = await self._api("GET", f"users/{quote(self.user or '', safe='')}")
        server = (data or {}).get("servers", {}).get(self.target.server) if status == 200 else None
        if isinstance(server, dict) and server.get("ready"):
            return str(server.get("url"))
        raise BackendStartError(
            self.name,
            f"backend '{self.name}': the hub did not start {self.server_label}: "
            f"{last_message or 'no progress reported'}",
        )

    def _serve(self, server_url: str) -> None:
        """Send requests under the server's prefix on the hub from now on."""
        up = super().upstream()
        path = server_url if server_url.endswith("/") else server_url + "/"
        if not path.startswith("/"):
            path = URL(path).path
        base = up.base_url.with_path(path, encoded=True)
        # No fast path: every answer is looked at for the hub's "server not running".
        self._upstream = replace(up, base_url=base, open_raw=None)
        self._problem = None

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
        asked whether the server still runs before the answer is replaced.
        """
        up = self._upstream
        if up is None or up.base_url.path == self.hub_url.path:
            return None
        into_hub = location is not None and URL(location).path.startswith(
            self.hub_url.path + "hub/"
        )
        if not (status in STOPPED_STATUSES or (300 <= status < 400 and into_hub)):
            return None
        if await self._still_running():
            return None
        if self.target.start_server:
            message = f"backend '{self.name}': server stopped by the hub; starting it again"
        else:
            message = (
                f"backend '{self.name}': server stopped by the hub; start it at "
                f"{self.hub_url / 'hub/home'} (--start-server never)"
            )
        problem = BackendStartError(self.name, message)
        self._problem = problem
        self._try_again()
        return problem

    async def _still_running(self) -> bool:
        """Whether the Hub says the server is ready (when in doubt, yes: pass the answer on)."""
        try:
            status, data = await self._api("GET", f"users/{quote(self.user or '', safe='')}")
        except BackendError:
            return True
        servers = (data or {}).get("servers") if isinstance(data, dict) else None
        server = (servers or {}).get(self.target.server) if status == 200 else None
        return status != 200 or (isinstance(server, dict) and bool(server.get("ready")))

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


def _event(line: bytes) -> dict[str, Any] | None:
    """One server-sent event's data, if the line carries one."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("data:"):
        return None
    try:
        data = json.loads(text[5:].strip())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _hub_message(data: Any, status: int) -> str:
    if isinstance(data, dict) and data.get("message"):
        return f"{data['message']} (HTTP {status})"
    return f"HTTP {status}"
