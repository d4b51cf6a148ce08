"""An SSH `direct-tcpip` channel dressed as an asyncio transport.

The port proxy reaches a port on an `ssh` backend's machine through the
backend's connection, with no local listening port: anyone on this machine
could use a local forward, and the apps behind it (TensorBoard, Dash) often
have no login of their own. asyncssh gives a channel and session callbacks;
this adapter lets any asyncio protocol (the fast path's, aiohttp's) speak
over that channel as over a socket, flow control included.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

import asyncssh


class ChannelTransport(asyncio.Transport):
    def __init__(self, channel: asyncssh.SSHTCPChannel[bytes], peer: tuple[str, int]) -> None:
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


class _Session(asyncssh.SSHTCPSession[bytes]):
    """Passes the channel's events to the asyncio protocol."""

    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int]) -> None:
        self.protocol = protocol
        self.peer = peer
        self.transport: ChannelTransport | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.transport = ChannelTransport(chan, self.peer)
        self.transport.set_protocol(self.protocol)
        self.protocol.connection_made(self.transport)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> bool:
        return bool(self.protocol.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport._closing = True
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
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
    transport = session.transport if isinstance(session, _Session) else None
    assert transport is not None
    return transport, protocol
