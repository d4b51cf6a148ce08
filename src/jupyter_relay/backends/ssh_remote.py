"""Finding the Jupyter on the `ssh` backend's host, over the connection, or starting one.

On a reconnection the server used before is asked first, over a channel;
otherwise `jupyter server list --json` (or `notebook list`) runs on the
remote, and with `start` a server is started there under `nohup setsid` and
waited for. The commands and the reading of their output are in `remote`.
"""

from __future__ import annotations

import asyncio

import asyncssh
from yarl import URL

from ..credentials import Secret
from ..errors import BackendTimeout
from ..logs import redact
from ..specs import SshTarget
from . import remote
from .base import HttpBackend, Progress
from .ssh_connect import SshError

LIST_TIMEOUT = 30.0


class RemoteJupyter(HttpBackend):
    """Finding the Jupyter: mixed into `SshBackend`, whose `__init__` sets these attributes."""

    target: SshTarget
    _stage: str  # what _establish is doing, for its error messages
    _server: remote.RemoteServer | None  # the one served, once found

    async def _same_server(self, conn: asyncssh.SSHClientConnection) -> remote.RemoteServer | None:
        """On a reconnection, the server used before if it still answers to its token.

        Asking it over a channel takes one round trip; `jupyter server list`
        starts a Python on the remote, which is most of the time to recover.
        A server restarted meanwhile (another port, another token) fails
        this, and is found by listing as at start.
        """
        old = self._server
        if old is None or old.secure:
            return None
        token = self.spec.token.read() or (Secret(old.token) if old.token else None)
        authority = URL.build(scheme="http", host=old.host, port=old.port).raw_authority
        request = f"GET {old.base_url}api/status HTTP/1.0\r\nHost: {authority}\r\n"
        if token:
            request += f"Authorization: token {token.value}\r\n"
        try:
            async with asyncio.timeout(self.timeouts.connect):
                reader, writer = await conn.open_connection(old.host, old.port, encoding=None)
                try:
                    writer.write((request + "\r\n").encode())
                    status = await reader.readline()
                finally:
                    writer.close()
        except (asyncssh.Error, OSError, TimeoutError):
            return None
        return old if status.split()[1:2] == [b"200"] else None

    async def _find_server(
        self, conn: asyncssh.SSHClientConnection, progress: Progress
    ) -> remote.RemoteServer:
        t = self.target
        where = f"{t.address}"
        servers = await self._list(conn)
        server = remote.pick(servers, t.jupyter_port)
        if server is None and t.start and t.jupyter_port is None:
            return await self._start_remote(conn, progress, {s.pid for s in servers})
        if server is None:
            raise SshError(
                self.name, f"backend '{self.name}': {remote.none_running(where, t.jupyter_port)}"
            )
        if len(servers) > 1 and t.jupyter_port is None:
            others = ", ".join(s.describe() for s in servers if s is not server)
            progress(
                f"backend '{self.name}': {len(servers)} Jupyter servers run on {t.host}; "
                f"using {server.describe()} (others: {others}); pick one with ?jupyter_port="
            )
        return server

    async def _list(self, conn: asyncssh.SSHClientConnection) -> list[remote.RemoteServer]:
        t = self.target
        result = None
        for app in ("server", "notebook"):
            try:
                result = await asyncio.wait_for(
                    conn.run(remote.list_command(t.jupyter, app), check=False), LIST_TIMEOUT
                )
            except TimeoutError as exc:
                raise BackendTimeout(
                    self.name, f"backend '{self.name}': 'jupyter {app} list' hung on {t.host}"
                ) from exc
            if result.exit_status == remote.NOT_FOUND_STATUS:
                raise SshError(
                    self.name, f"backend '{self.name}': {remote.no_jupyter(t.address, t.jupyter)}"
                )
            if result.exit_status == 0:
                return remote.parse_list(str(result.stdout or ""))
        detail = _remote_text(result.stderr).splitlines()[-1:] if result else []
        raise SshError(
            self.name,
            f"backend '{self.name}': 'jupyter server list' failed on {t.host}"
            + (f": {detail[0]}" if detail else ""),
        )

    async def _start_remote(
        self, conn: asyncssh.SSHClientConnection, progress: Progress, before: set[int | None]
    ) -> remote.RemoteServer:
        t = self.target
        logfile = remote.log_path(self.name)
        self._stage = "starting Jupyter"
        progress(f"backend '{self.name}': no Jupyter runs on {t.host}; starting one there")
        result = await conn.run(remote.start_command(t.jupyter, logfile), check=False)
        if result.exit_status not in (0, None):
            raise SshError(
                self.name,
                f"backend '{self.name}': could not start Jupyter on {t.host}: "
                + " | ".join(_remote_text(result.stderr).splitlines()[-3:])[:300],
            )
        pid = int(str(result.stdout or "0").strip().splitlines()[-1] or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.start
        why = f"did not come up in {self.timeouts.start:g} s"
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            fresh = [s for s in await self._list(conn) if s.pid not in before]
            if fresh:
                progress(
                    f"backend '{self.name}': started Jupyter on {t.host} {fresh[0].describe()}; "
                    f"its log is ~/{logfile} there"
                )
                return fresh[0]
            if pid and (await conn.run(remote.alive_command(pid), check=False)).exit_status:
                why = "exited"
                break
        tail = await conn.run(f"tail -n 3 ~/{logfile}", check=False)
        raise SshError(
            self.name,
            f"backend '{self.name}': the Jupyter started on {t.host} {why}; "
            f"its log (~/{logfile} there) ends: "
            + " | ".join(_remote_text(tail.stdout).splitlines()[-3:]),
        )


def _remote_text(output: object) -> str:
    """What a remote command printed, fit to show: a Jupyter prints its token in its URL."""
    return redact(str(output or "").strip())
