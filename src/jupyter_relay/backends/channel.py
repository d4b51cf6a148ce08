"""An SSH channel dressed as an asyncio transport.

The `ssh` backend reaches its Jupyter, and the port proxy a port on its
machine, through the backend's connection, with no local listening port:
anyone on this machine could use a local forward, and the apps behind it
(TensorBoard, Dash) often have no login of their own. asyncssh gives a
channel and session callbacks; this adapter lets any asyncio protocol (the
engine's, aiohttp's) speak over that channel as over a socket, flow control
included.

Two kinds of channel: `direct-tcpip` to host:port (sshd dials it), and a
`direct-streamlocal` one to the relay's helper on that machine (`far_side`),
which first reads a greeting naming host:port and answers `ok` or why not.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel


class ChannelTransport(asyncio.Transport):
    def __init__(self, channel: SSHChannel[bytes], peer: tuple[str, int]) -> None:
        super().__init__()
        self._channel = channel
        self._peer = peer
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # Not the SSH socket: options set on "the socket" would land on the SSH link.
        if name == "peername":
            return self._peer
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._channel.close()

    def abort(self) -> None:
        self._closing = True
        self._channel.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._channel.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._channel.resume_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._channel.write(bytes(data))

    def write_eof(self) -> None:
        self._channel.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._channel.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._channel.set_write_buffer_limits(high, low)


class _Session(asyncssh.SSHTCPSession[bytes], asyncssh.SSHUNIXSession[bytes]):
    """Passes the channel's events to the asyncio protocol.

    With a `greeting` (a channel to the far-side helper), the greeting goes
    out and the protocol is connected at once, with no round trip waited
    for; the helper's first line is taken off what follows. `ok` lets the
    rest through; a refusal ends the protocol's connection with it, as
    ConnectionRefusedError (the engine answers as for a refused dial).
    """

    def __init__(
        self, protocol: asyncio.Protocol, peer: tuple[str, int], greeting: bytes = b""
    ) -> None:
        self.protocol = protocol
        self.peer = peer
        self.transport: ChannelTransport | None = None
        self._greeting = greeting
        self._answer: bytes | None = b"" if greeting else None  # None: answered (or none due)
        self._live = False  # the protocol is connected and not yet told it ended

    def connection_made(self, chan: SSHChannel[bytes]) -> None:
        self.transport = ChannelTransport(chan, self.peer)
        self.transport.set_protocol(self.protocol)
        if self._greeting:
            chan.write(self._greeting)
        self._live = True
        self.protocol.connection_made(self.transport)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if not self._live:
            return
        if self._answer is None:
            self.protocol.data_received(data)
            return
        self._answer += data
        line, found, rest = self._answer.partition(b"\n")
        if found:
            self._answered(line.decode("utf-8", "replace"), rest)
        elif len(self._answer) > 1024:
            self._answered("error 71 an answer that is not the helper's", b"")

    def _answered(self, line: str, rest: bytes) -> None:
        assert self.transport is not None
        self._answer = None
        if line == "ok":
            if rest:
                self.protocol.data_received(rest)
            return
        _, number, reason = [*line.split(" ", 2), "", ""][:3]
        host, port = self.peer
        refused = ConnectionRefusedError(
            int(number) if number.isdigit() else errno.ECONNREFUSED,
            f"{reason or line or 'refused'} (said the relay's helper on the ssh server, "
            f"connecting to {host}:{port})",
        )
        self._live = False
        self.transport.abort()
        self.protocol.connection_lost(refused)

    def eof_received(self) -> bool:
        return self._live and bool(self.protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport._closing = True
        if self._live:
            self._live = False
            self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._live:
            self.protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._live:
            self.protocol.resume_writing()


async def open_channel(
    conn: asyncssh.SSHClientConnection,
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Connect `factory()`'s protocol to `host:port` as the SSH server's machine sees it.

    The remote side refusing (nothing listening there) raises ConnectionRefusedError,
    as a socket would.
    """
    protocol = factory()
    try:
        _, session = await conn.create_connection(
            lambda: _Session(protocol, (host, port)), host, port, encoding=None
        )
    except asyncssh.ChannelOpenError as exc:
        reason = exc.reason or "refused"
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"{reason} (said the ssh server, connecting to {host}:{port})"
        ) from exc
    except (asyncssh.Error, asyncssh.misc.ConnectionLost) as exc:
        raise ConnectionResetError(errno.ECONNRESET, f"ssh connection lost: {exc}") from exc
    assert isinstance(session, _Session) and session.transport is not None
    return session.transport, protocol


async def open_greeted(
    conn: asyncssh.SSHClientConnection,
    path: str,
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Connect `factory()`'s protocol to `host:port` through the far-side helper at `path`.

    Returns once the channel is open, with no further round trip: should the
    helper fail to dial, the protocol's connection ends with
    ConnectionRefusedError (its reason). The helper gone or the channel
    refused raise ConnectionResetError.
    """
    protocol = factory()
    greeting = f"{host} {port}\n".encode()
    try:
        _, session = await conn.create_unix_connection(
            lambda: _Session(protocol, (host, port), greeting), path, encoding=None
        )
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionResetError(
            errno.ECONNRESET,
            f"the ssh server refused a channel to the relay's helper: {exc.reason}",
        ) from exc
    except (asyncssh.Error, asyncssh.misc.ConnectionLost) as exc:
        raise ConnectionResetError(errno.ECONNRESET, f"ssh connection lost: {exc}") from exc
    assert isinstance(session, _Session) and session.transport is not None
    return session.transport, protocol
