"""The `ssh` kind: a Jupyter on another machine, reached over one SSH connection.

asyncssh logs in as `ssh` would: `~/.ssh/config` (or `ssh_config=`), keys,
ssh-agent, and `known_hosts`; an unknown or changed host key is refused, with
the command that trusts it. Over the connection the relay runs `jupyter
server list --json` to find the running server (its port, base URL and
token), or starts one under `nohup setsid` so it outlives the session.

Requests then ride the connection: each HTTP or websocket connection to a
plain-HTTP Jupyter is a direct-tcpip channel to the server's own address, so no
local port is opened that others on this machine could use, and to the
forwarder it is a plain HTTP backend with every guarantee of the core. A
Jupyter that speaks TLS is reached through a local forward bound to 127.0.0.1
(aiohttp does TLS only over its own sockets). The remote Jupyter still asks for
its token.

When the connection drops (sshd restarted, laptop asleep, network changed),
requests fail at once with 502 naming the backend, and a watcher reconnects
with exponential backoff and jitter, finds the server again (it may have been
restarted) and opens the way to it again.
Keepalives (ServerAliveInterval and ServerAliveCountMax of the ssh config;
by default every KEEPALIVE s, KEEPALIVE_COUNT missed, in `ssh_connect`) bound
how long a silently dead connection goes unnoticed: interval x (count + 1),
about 40 s.

Here: the connection's life (establishing it, the way to the server, the
reconnecting). Logging in is `ssh_connect` (reading the ssh config,
`ssh_config`); finding or starting the Jupyter there is `ssh_remote`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncssh
from yarl import URL

from ..credentials import Secret
from ..errors import BackendError, BackendTimeout, BackendUnreachable
from ..logs import redact
from . import remote, ssh_far
from .base import HealthResult, Progress, RawOpener, Upstream
from .ssh_connect import SshConnect, SshError
from .ssh_remote import RemoteJupyter

log = logging.getLogger("jupyter_relay.ssh")

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
MIN_SPACING = 1.0  # between attempts woken by requests


class SshBackend(SshConnect, RemoteJupyter):
    """Logs in (`SshConnect`), finds the Jupyter (`RemoteJupyter`), serves it, stays connected."""

    kind = "ssh"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.spec.ssh is not None
        self.target = self.spec.ssh
        self.interactive = sys.stdin.isatty()
        self._password: str | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listener: asyncssh.SSHListener | None = None
        # The way to host:port there: the relay's helper (when it runs) or direct-tcpip.
        self._channels: ssh_far.Channels | None = None
        self._local_port = 0
        self._down: str | None = "not connected yet"
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._last_attempt = 0.0
        self._stage = "connecting"  # what _establish is doing, for its error messages
        self._prompt_started: float | None = None  # when the user was asked, while asked
        self._typing = 0.0  # seconds spent at prompts during this connect
        self._server: remote.RemoteServer | None = None  # the one served, once found
        self.reconnects = 0  # connections made again after one was lost (/relay/metrics)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self, progress: Progress) -> None:
        """Connect and find the Jupyter; if that fails, say why and keep trying."""
        progress = _redacting(progress)
        try:
            await self._establish(progress)
        except BackendError as exc:  # _establish turns every failure into one
            self._down = exc.message
            progress(f"{exc.message}; retrying in the background")
            self._watcher = asyncio.create_task(self._reconnect())
            return
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        self._close_connection()
        await super().stop()

    def _close_connection(self) -> None:
        if self._channels is not None:
            self._channels.close()
            self._channels = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _establish(self, progress: Progress) -> None:
        """Connect, find the server and open the way to it; any failure is a BackendError.

        asyncssh raises more than its documented errors (ChannelOpenError when
        sshd refuses a session, ConnectionLost when it dies mid-command,
        OSError, ValueError from odd output): each becomes a message that
        names the backend and the step, so neither start-up nor the
        reconnect loop ever sees a bare exception.
        """
        self._stage = "logging in"
        try:
            await self._establish_steps(progress)
        except BackendError:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> BackendError:
        t, who = self.target, f"backend '{self.name}'"
        doing = self._stage
        if isinstance(exc, asyncssh.ChannelOpenError):
            return SshError(
                self.name,
                f"{who}: the SSH server {t.address} refused to open a channel while {doing} "
                f"({exc.reason or 'no reason given'}); its sshd_config may forbid it "
                "(MaxSessions, AllowTcpForwarding, PermitOpen): ask its administrator",
            )
        if isinstance(exc, asyncssh.DisconnectError):  # ConnectionLost among them
            return SshError(
                self.name,
                f"{who}: the SSH connection to {t.address} was lost while {doing} "
                f"({exc.reason or 'closed'}); is sshd there being restarted?",
            )
        if isinstance(exc, (TimeoutError, asyncssh.TimeoutError)):
            return BackendTimeout(
                self.name, f"{who}: no answer from {t.address} over SSH in time while {doing}"
            )
        if isinstance(exc, OSError):
            why = os.strerror(exc.errno) if exc.errno else (str(exc) or type(exc).__name__)
            return SshError(
                self.name, f"{who}: the SSH link to {t.address} failed while {doing} ({why})"
            )
        detail = redact(str(exc).splitlines()[0] if str(exc) else "")
        return SshError(
            self.name,
            f"{who}: unexpected failure while {doing} on {t.address} "
            f"({type(exc).__name__}{': ' + detail if detail else ''}); "
            "please report it with the relay's --log-level debug output",
        )

    async def _establish_steps(self, progress: Progress) -> None:
        where = self.target.address
        who = f"backend '{self.name}'"
        progress(f"{who}: connecting to {where} over SSH")
        conn = await self._connect()
        channels: ssh_far.Channels | None = None
        try:
            self._stage = "looking for the Jupyter server"
            server = await self._same_server(conn) or await self._find_server(conn, progress)
            self._stage = "opening the way to the Jupyter server"
            if server.secure or not self.target.helper:
                tls = "not used for a Jupyter that speaks TLS"
                far, why = None, tls if server.secure else "turned off with ?helper=false"
            else:
                far, why = await ssh_far.try_start(conn, self.target.jupyter, who)
            channels = ssh_far.Channels(conn, far, who, why)
            listener, base, opener = await self._route(conn, server, channels)
        except BaseException:
            if channels is not None:
                channels.close()
            conn.close()
            raise
        old_session = self._session
        self._conn, self._listener, self._channels = conn, listener, channels
        token = self.spec.token.read() or (Secret(server.token) if server.token else None)
        self._open(base, token, opener)
        if old_session is not None:
            await old_session.close()
        self._down = None
        self._server = server
        progress(
            f"backend '{self.name}': serving the Jupyter on {self.target.host} "
            f"{server.describe()} through SSH"
            + (" and the relay's helper there" if channels.far is not None else "")
        )

    async def _route(
        self,
        conn: asyncssh.SSHClientConnection,
        server: remote.RemoteServer,
        channels: ssh_far.Channels,
    ) -> tuple[asyncssh.SSHListener | None, URL, RawOpener | None]:
        """How requests reach `server`: (local forward or None, base URL, channel opener).

        Plain HTTP rides a channel per connection, with no local port anyone
        on this machine could use: to the relay's helper there, else a
        direct-tcpip one (`channels` chooses). One direct-tcpip channel is
        opened here, so an sshd that forbids them (AllowTcpForwarding,
        PermitOpen) is named now rather than at every request, and its policy
        holds with the helper too.
        A server that speaks TLS gets a local forward bound to 127.0.0.1
        (aiohttp does TLS only over its own sockets).
        """
        host, port = server.host, server.port
        if server.secure:
            try:
                listener = await conn.forward_local_port("127.0.0.1", self._local_port, host, port)
            except OSError:  # the old local port is taken meanwhile: any port will do
                listener = await conn.forward_local_port("127.0.0.1", 0, host, port)
            self._local_port = listener.get_port()
            base = URL.build(
                scheme="https",
                host="127.0.0.1",
                port=self._local_port,
                path=server.base_url,
                encoded=True,
            )
            return listener, base, None
        timeout = self.timeouts.connect

        async def opener(
            factory: Callable[[], asyncio.Protocol],
        ) -> tuple[asyncio.Transport, asyncio.Protocol]:
            async with asyncio.timeout(timeout):
                return await channels.open(host, port, factory)

        try:
            async with asyncio.timeout(timeout):
                probe, _ = await conn.create_connection(asyncssh.SSHTCPSession, host, port)
        except asyncssh.ChannelOpenError as exc:
            why = exc.reason or "no reason given"
            if exc.code == asyncssh.OPEN_CONNECT_FAILED:
                raise SshError(
                    self.name,
                    f"backend '{self.name}': nothing answers at {host}:{port} on "
                    f"{self.target.host} ({why}), where 'jupyter server list' said a "
                    "server runs; it may have just stopped: start it again there",
                ) from exc
            raise SshError(
                self.name,
                f"backend '{self.name}': the SSH server {self.target.address} refused a "
                f"channel to the Jupyter at {host}:{port} ({why}); its sshd_config must "
                "allow TCP forwarding there (AllowTcpForwarding, PermitOpen): "
                "ask its administrator",
            ) from exc
        probe.close()
        channels.permitted.add((host, port))
        # The Host header the server gets is its own address, as a browser there would send.
        base = URL.build(scheme="http", host=host, port=port, path=server.base_url, encoded=True)
        return None, base, opener

    # --- staying connected ------------------------------------------------------------

    async def _watch(self) -> None:
        """Wait for the connection to end, then reconnect."""
        assert self._conn is not None
        await self._conn.wait_closed()
        if self._stopping:
            return
        self._down = f"the SSH connection to {self.target.address} was lost; reconnecting"
        log.warning("backend '%s': %s", self.name, self._down)
        self._close_connection()
        await self._reconnect()

    async def _reconnect(self) -> None:
        """Try again and again, waiting longer each time, but at once when asked for.

        A request while the backend is down wakes this loop (at most once a
        MIN_SPACING), so service resumes with the first request after SSH is
        back, not at the end of a long backoff.
        """
        attempt = 0
        said = self._down  # logged: only a change is logged again (a state, not each try)
        while not self._stopping:
            delay = random.uniform(0.5, 1.0) * min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            # Cleared only now: a request that came during the last attempt still counts.
            self._wake.clear()
            self._last_attempt = time.monotonic()
            attempt += 1
            try:
                await self._establish(_redacting(lambda message: log.debug("%s", message)))
            except BackendError as exc:
                self._down = f"{exc.message} (reconnecting, attempt {attempt})"
                if exc.message != said:
                    said = exc.message
                    log.warning(
                        "%s; trying again in the background, at most every %g s",
                        exc.message,
                        BACKOFF_CAP,
                    )
                else:
                    log.debug("%s", self._down)
                continue
            except Exception as exc:  # a bug must not end the reconnecting for good
                self._down = (
                    f"backend '{self.name}': reconnecting to {self.target.address} failed "
                    f"({type(exc).__name__}: {exc}); retrying (attempt {attempt})"
                )
                log.error("%s", self._down, exc_info=log.isEnabledFor(logging.DEBUG))
                continue
            log.warning("backend '%s': connected again after %d attempt(s)", self.name, attempt)
            self.reconnects += 1
            self._watcher = asyncio.create_task(self._watch())
            return

    # --- what the relay asks ----------------------------------------------------------

    def upstream(self) -> Upstream:
        if self._down is not None:
            if time.monotonic() - self._last_attempt >= MIN_SPACING:
                self._wake.set()  # someone wants it: try now rather than after the backoff
            message = self._down
            if not message.startswith("backend '"):
                message = f"backend '{self.name}': {message}"
            raise BackendUnreachable(self.name, message)
        return super().upstream()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self._channels is not None and self._down is None:
            info["reached"] = f"over SSH to {self.target.host}: {self._channels.describe()}"
        return info

    async def check(self) -> HealthResult:
        if self._down is not None:
            result = HealthResult(False, None, time.time(), self._down)
            self.last_health = result
            return result
        return await super().check()

    async def open_channel(
        self, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """Connect `factory()`'s protocol to `host:port` as the remote machine sees it.

        For the port proxy: through the relay's helper there once sshd let a
        direct-tcpip channel reach the port (`ssh_far.Channels`).
        """
        channels = self._channels
        if channels is None or self._down is not None:
            raise ConnectionResetError(errno.ECONNRESET, self._down or "not connected")
        return await channels.open(host, port, factory)


def _redacting(progress: Progress) -> Progress:
    def say(message: str) -> None:
        progress(redact(message))

    return say
