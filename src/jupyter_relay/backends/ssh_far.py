"""The relay's helper on the `ssh` backend's machine: starting it, and channels through it.

Over OpenSSH's own forwarding, each kernel round trip can wait up to 40 ms
for sshd's delayed ACK on the remote (see `far_side`). So once the Jupyter
is found, the relay starts `far_side` there, over the same connection, with
the Python next to the remote `jupyter`; it listens on a Unix socket of its
own (mode 0700, no TCP port) and lives exactly as long as this SSH session.
Every connection to the Jupyter, and the port proxy's to the machine's
ports, is then a `direct-streamlocal@openssh.com` channel to it.

When it cannot start (no Python found, sshd forbids Unix-socket forwarding,
an old OpenSSH), the relay says why once and keeps to `direct-tcpip`
channels, which work everywhere, only slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from collections.abc import Callable

import asyncssh

from ..logs import redact
from . import channel, remote

log = logging.getLogger("jupyter_relay.ssh")

BANNER = "jupyter-relay-far-side 1 "
START_TIMEOUT = 20.0


class FarSideUnavailable(Exception):
    """The helper could not be started; the message says why, for the log."""


class FarSide:
    """A running helper: open channels through it; close it with the session."""

    def __init__(
        self, conn: asyncssh.SSHClientConnection, process: asyncssh.SSHClientProcess[str], path: str
    ) -> None:
        self._conn = conn
        self._process = process
        self.path = path
        self.ended = False  # the helper exited (killed, crashed) while the session lives
        self._stderr = asyncio.create_task(self._log_stderr())
        self._watch = asyncio.create_task(self._wait_exit())

    async def _wait_exit(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            await self._process.wait_closed()
        self.ended = True

    async def open(
        self, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        return await channel.open_greeted(self._conn, self.path, host, port, factory)

    async def _log_stderr(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            async for line in self._process.stderr:
                if line.strip():
                    log.warning("the relay's helper on the ssh server says: %s", redact(line))

    def close(self) -> None:
        """End the helper: its stdin closes, it removes its socket and exits."""
        self._stderr.cancel()
        self._watch.cancel()
        self._process.close()


def program() -> str:
    """The helper's source, sent with the command that runs it."""
    return (importlib.resources.files(__package__) / "far_side.py").read_text()


async def start(conn: asyncssh.SSHClientConnection, jupyter: str) -> FarSide:
    """Start the helper on the machine of `conn`; FarSideUnavailable says why it did not."""
    process = await conn.create_process(remote.far_side_command(jupyter, program()))
    try:
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
    except TimeoutError:
        process.close()
        raise FarSideUnavailable(f"it did not start in {START_TIMEOUT:g} s") from None
    if not line.startswith(BANNER):
        with contextlib.suppress(TimeoutError, asyncssh.Error):
            async with asyncio.timeout(2):
                said = (await process.stderr.read()).strip().splitlines()[-1:]
        process.close()
        why = redact(said[0]) if said else "it exited without a word"
        raise FarSideUnavailable(f"it could not start ({why})")
    path = line[len(BANNER) :].strip()
    try:  # sshd may forbid channels to Unix sockets (AllowStreamLocalForwarding no)
        async with asyncio.timeout(START_TIMEOUT):
            probe, _ = await conn.create_unix_connection(asyncssh.SSHUNIXSession, path)
    except (asyncssh.ChannelOpenError, TimeoutError) as exc:
        process.close()
        why = exc.reason if isinstance(exc, asyncssh.ChannelOpenError) else "no answer"
        raise FarSideUnavailable(
            f"the ssh server refused a channel to its Unix socket ({why}; "
            "sshd_config's AllowStreamLocalForwarding)"
        ) from None
    probe.close()
    return FarSide(conn, process, path)


async def try_start(
    conn: asyncssh.SSHClientConnection, jupyter: str, who: str
) -> tuple[FarSide | None, str]:
    """(the helper, "") or (None, why not) after saying it once in the log (channels go direct)."""
    try:
        return await start(conn, jupyter), ""
    except (FarSideUnavailable, asyncssh.Error, OSError) as exc:
        why = str(exc) if isinstance(exc, FarSideUnavailable) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "%s: the relay's helper could not run on the ssh server: %s; connections go "
            "through sshd's own forwarding, where a kernel round trip may take up to "
            "40 ms longer",
            who,
            why,
        )
        return None, why


class Channels:
    """How one SSH connection reaches host:port: the helper, once sshd allowed it directly.

    The first connection to each (host, port) is a direct-tcpip channel, so
    sshd's forwarding policy (AllowTcpForwarding, PermitOpen) decides what
    the helper may reach; later ones go through the helper. Should the helper
    end while the connection lives, the next connections go direct, and the
    log says so once.
    """

    def __init__(
        self, conn: asyncssh.SSHClientConnection, far: FarSide | None, who: str, why: str = ""
    ) -> None:
        self.conn = conn
        self.far = far
        self.who = who
        self.why = why  # when there is no helper: why not
        self.permitted: set[tuple[str, int]] = set()

    def describe(self) -> str:
        """How connections go, for the status page."""
        if self.far is not None:
            return "each connection through the relay's helper there (no delayed-ACK stall)"
        why = f" (the relay's helper: {self.why})" if self.why else ""
        return f"each connection a direct-tcpip channel of sshd's{why}"

    async def open(
        self, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        far = self.far
        if far is not None and far.ended:
            self._lost("it exited")
        elif far is not None and (host, port) in self.permitted:
            try:
                return await far.open(host, port, factory)
            except ConnectionResetError as exc:  # nothing was sent: going direct is safe
                if self.conn.is_closed():
                    raise
                self._lost(str(exc))
        opened = await channel.open_channel(self.conn, host, port, factory)
        self.permitted.add((host, port))
        return opened

    def _lost(self, why: str) -> None:
        if self.far is not None:
            self.far.close()
            self.far = None
            self.why = f"it ended: {redact(why)}"
            log.warning(
                "%s: the relay's helper on the ssh server ended (%s); connections go through "
                "sshd's own forwarding until the next reconnection",
                self.who,
                redact(why),
            )

    def close(self) -> None:
        if self.far is not None:
            self.far.close()
            self.far = None
