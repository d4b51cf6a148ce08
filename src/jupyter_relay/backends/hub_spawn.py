"""Starting the user's server on the JupyterHub, and following the spawn's progress.

The relay asks the Hub API to start the server (or waits while the hub stops
it), then reads the spawn's progress events (server-sent events) and shows
them on the terminal until the server is ready, or the hub says it failed,
with its own message.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from yarl import URL

from ..errors import BackendError, BackendStartError, BackendTimeout
from .base import Progress
from .hub_api import HubApi, hub_message, json_or_none

STOP_POLL = 0.5  # seconds between looks at a server the hub is stopping


class SpawnFailed(BackendStartError):
    """The hub reported the spawn failed, with its own message."""


class HubSpawn(HubApi):
    """Starting the server: mixed into `HubBackend`."""

    async def _wait_stopped(self, progress: Progress) -> dict[str, Any] | None:
        """The hub is stopping the server (a cull): wait until it is done, then go on."""
        progress(f"backend '{self.name}': the hub is stopping {self.server_label}; waiting")
        deadline = time.monotonic() + self.timeouts.start
        while time.monotonic() < deadline:
            await asyncio.sleep(STOP_POLL)
            server = await self._server_model()
            if server is None or server.get("pending") != "stop":
                return server
        raise BackendTimeout(
            self.name,
            f"backend '{self.name}': the hub was still stopping {self.server_label} after "
            f"{self.timeouts.start:g} s (--start-timeout); look at {self.home_page}",
        )

    async def _ask_to_start(self) -> None:
        """POST the start; raise unless the hub started it (or it was started meanwhile)."""
        status, data = await self._api("POST", self._server_path())
        if status in (401, 403):
            raise self._refusal(status, data, f"start {self.server_label}")
        if status in (201, 202):
            return
        if status == 400 and await self._server_model() is not None:
            return  # started meanwhile (else the hub refused, e.g. a limit of servers)
        refused = BackendStartError(
            self.name,
            f"backend '{self.name}': the hub did not start {self.server_label}: "
            f"{hub_message(data, status)}; start it at {self.home_page} to see why",
        )
        if status < 500:
            raise refused
        # A spawn that failed at once is a bare 500 here; the progress stream has the
        # hub's own message ("Spawn failed: ...").
        try:
            await self._follow_progress(lambda message: None)
        except SpawnFailed:
            raise
        except BackendError as exc:
            raise refused from exc
        raise refused

    def _spawn_failed(self, message: str) -> SpawnFailed:
        return SpawnFailed(
            self.name,
            f"backend '{self.name}': the hub could not start {self.server_label}: {message}; "
            f"the hub's log, or a start at {self.home_page}, says more; the relay tries "
            "again on the next request",
        )

    async def _follow_progress(self, progress: Progress) -> str:
        """Print the spawn's progress events; return the server's URL when it is ready."""
        up = super().upstream()
        url = URL(str(self.hub_url) + "hub/api/" + self._server_path() + "/progress", encoded=True)
        headers = {**dict(up.credentials), "Accept": "text/event-stream"}
        last_message = ""
        try:
            async with asyncio.timeout(self.timeouts.start):
                async with up.client.get(
                    url, headers=headers, server_hostname=up.server_hostname
                ) as resp:
                    if resp.status != 200:
                        data = json_or_none(await resp.read())
                        if resp.status in (401, 403):
                            raise self._refusal(
                                resp.status, data, f"follow the start of {self.server_label}"
                            )
                        raise BackendStartError(
                            self.name,
                            f"backend '{self.name}': cannot follow the start of "
                            f"{self.server_label}: {hub_message(data, resp.status)}; the "
                            "relay tries again on the next request",
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
                            raise self._spawn_failed(message or "spawn failed")
                        if event.get("ready"):
                            return str(event.get("url") or "")
        except TimeoutError as exc:
            raise BackendTimeout(
                self.name,
                f"backend '{self.name}': {self.server_label} did not start within "
                f"{self.timeouts.start:g} s (--start-timeout; last from the hub: "
                f"{last_message or 'nothing'}); the hub goes on starting it, see "
                f"{self.pending_page}; try again in a moment, or give a longer --start-timeout",
            ) from exc
        except aiohttp.ClientError as exc:
            raise BackendStartError(
                self.name,
                f"backend '{self.name}': lost the hub while it started {self.server_label} "
                f"({exc}); the relay tries again on the next request",
            ) from exc
        # The stream ended without "ready": ask where the server is now.
        server = await self._server_model()
        if server is not None and server.get("ready") and server.get("url"):
            return str(server["url"])
        raise self._spawn_failed(last_message or "no progress reported")


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
