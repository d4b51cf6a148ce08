"""Talking to the JupyterHub REST API for the `hub` backend, and reading its answers.

Each call carries the hub API token; a refusal (401/403) becomes a message
that says whether the token is not valid or lacks a scope, which one, and how
to give a new one. Here too: whose token it is, and the hub's model of the
user's server.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..errors import BackendAuthError, BackendError
from ..specs import HubTarget
from ..translate import translate_client_error
from .base import HttpBackend

API_TIMEOUT = 30.0
# The Hub's 403 for a valid token without the scope: "... requires any of [a, b]".
SCOPE_REFUSAL = re.compile(r"requires any of \[([^\]]*)\]")


class HubApi(HttpBackend):
    """The Hub API: mixed into `HubBackend`, whose `__init__` sets these attributes."""

    target: HubTarget
    hub_url: URL  # scheme://host:port/prefix/
    user: str | None  # None until learnt from the token

    @property
    def token_page(self) -> str:
        return str(self.hub_url / "hub/token")

    @property
    def server_label(self) -> str:
        who = self.user or "?"
        return f"{who}'s server '{self.target.server}'" if self.target.server else f"{who}'s server"

    async def _api(
        self, method: str, path: str, body: Any = None, *, doing: str = "read the user"
    ) -> tuple[int, Any]:
        """One call to the Hub API; a GET the hub refuses (401/403) raises, saying why."""

        up = super().upstream()
        url = URL(str(self.hub_url) + "hub/api/" + path, encoded=True)
        headers = dict(up.credentials)
        try:
            async with asyncio.timeout(API_TIMEOUT):
                async with up.client.request(
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
        data = json_or_none(raw)
        if status in (401, 403) and method == "GET":
            raise self._refusal(status, data, doing)
        return status, data

    def _refusal(self, status: int, data: Any, doing: str) -> BackendAuthError:
        """The hub said no to the token: it is not valid, or it lacks a scope for `doing`."""
        source = self.spec.token.describe()
        said = hub_said(data)
        scopes = SCOPE_REFUSAL.search(said)
        if status == 403 and scopes:
            first = scopes.group(1).split(",")[0].strip()
            return BackendAuthError(
                self.name,
                f"backend '{self.name}': the token from {source} lacks the scope to {doing} "
                f"(the hub: {said}); make a token with the scope {first} at "
                f"{self.token_page}, then {self._renew_hint()}",
            )
        return BackendAuthError(
            self.name,
            f"backend '{self.name}': the hub refused the API token from {source} "
            f"(HTTP {status}: revoked, expired or mistyped); make a new one at "
            f"{self.token_page}, then {self._renew_hint()}",
        )

    def _renew_hint(self) -> str:
        if self.spec.token.file is not None:
            return f"write it into {self.spec.token.file} (read again, no restart needed)"
        if self.spec.token.env is not None:
            return (
                f"export {self.spec.token.env} and restart the relay "
                "(or give token_file=, which is read again when it changes)"
            )
        return "give it to the relay"

    def _server_path(self) -> str:
        assert self.user is not None
        user = quote(self.user, safe="")
        if self.target.server:
            return f"users/{user}/servers/{quote(self.target.server, safe='')}"
        return f"users/{user}/server"

    @property
    def home_page(self) -> str:
        return str(self.hub_url / "hub/home")

    @property
    def pending_page(self) -> str:
        assert self.user is not None
        page = self.hub_url / "hub/spawn-pending" / self.user
        return str(page / self.target.server if self.target.server else page)

    async def _whoami(self) -> str:
        status, data = await self._api("GET", "user", doing="learn whose token it is")
        if status != 200 or not isinstance(data, dict) or not data.get("name"):
            raise BackendError(
                self.name,
                f"backend '{self.name}': asked whose token this is, the hub at {self.hub_url} "
                f"answered {hub_message(data, status)}; is that the JupyterHub's URL (with "
                "its base prefix)? Or name the user: hub+https://USER@host/",
            )
        return str(data["name"])

    async def _server_model(self) -> dict[str, Any] | None:
        """The Hub's model of the server (None: it has none); raises if it cannot say."""
        assert self.user is not None
        status, data = await self._api("GET", f"users/{quote(self.user, safe='')}")
        if status == 404 and hub_said(data):
            raise BackendError(
                self.name,
                f"backend '{self.name}': the hub has no user {self.user!r} that the token "
                f"from {self.spec.token.describe()} may see; check the name before @ in the "
                "backend URI (hub+https://USER@host/), or leave it out to use the token's "
                "own user",
            )
        if status != 200 or not isinstance(data, dict):
            raise BackendError(
                self.name,
                f"backend '{self.name}': the hub at {self.hub_url} answered "
                f"{hub_message(data, status)} for the user {self.user!r}; is that the "
                "JupyterHub's URL (with its base prefix)?",
            )
        if "servers" not in data:  # the Hub leaves out what the token may not read
            raise BackendAuthError(
                self.name,
                f"backend '{self.name}': the token from {self.spec.token.describe()} lacks "
                f"the scope to see {self.server_label} (read:servers); make a token with the "
                f"scope read:servers at {self.token_page}, then {self._renew_hint()}",
            )
        server = (data.get("servers") or {}).get(self.target.server)
        return server if isinstance(server, dict) else None

    async def _access_refusal(self) -> BackendAuthError | None:
        """A refusal naming access:servers, if the token lacks it for this server."""
        try:
            status, data = await self._api("GET", "user", doing="learn the token's scopes")
        except BackendError:
            return None
        scopes = data.get("scopes") if status == 200 and isinstance(data, dict) else None
        if not isinstance(scopes, list):
            return None
        mine = {
            "access:servers",
            f"access:servers!user={self.user}",
            f"access:servers!server={self.user}/{self.target.server}",
        }
        for scope in map(str, scopes):
            if scope in mine or scope.startswith("access:servers!group="):
                return None  # it may (a group's members the relay cannot tell)
        return BackendAuthError(
            self.name,
            f"backend '{self.name}': the token from {self.spec.token.describe()} lacks the "
            f"scope to use {self.server_label} (access:servers); make a token with the scope "
            f"access:servers at {self.token_page}, then {self._renew_hint()}",
        )


def json_or_none(raw: bytes) -> Any:
    """A hub answer's JSON body, or None when it has none (or not JSON)."""
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


def hub_said(data: Any) -> str:
    """The message of the Hub's JSON error, or ''."""
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"]).strip()
    return ""


def hub_message(data: Any, status: int) -> str:
    said = hub_said(data)
    return f"{said} (HTTP {status})" if said else f"HTTP {status}"
