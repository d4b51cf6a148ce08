"""The relay's helper on an `ssh` backend's machine: it holds the far end of each channel.

This file is not imported by the relay: its text is run on the remote machine
(`python3 -c`) over the SSH connection, by the Python next to the remote
`jupyter`, so it uses the standard library only and runs on Python 3.8.

Why: jupyter_server leaves Nagle's algorithm on, so when it writes a kernel
message in several small pieces, each piece after the first waits for the
peer's ACK; a peer that delays its ACKs (Linux: up to 40 ms) then adds that
to every round trip. Through OpenSSH's forwarding that peer is sshd, whose
ACKs the relay cannot hasten. This helper is the peer instead: it connects to
Jupyter (or to any port the relay names) with TCP_NODELAY, and re-arms
TCP_QUICKACK after every read so its ACKs go out at once.

How, for the relay (`ssh_far.py`):
- started with the SSH session's stdin as its lifeline: it prints
  `jupyter-relay-far-side 1 <socket path>` once listening, and exits, removing
  its socket, when stdin ends (the relay closed the session or the SSH
  connection is gone), on SIGHUP or on SIGTERM;
- it listens only on a Unix socket in a new directory of mode 0700 (no TCP
  port); the relay reaches it with `direct-streamlocal@openssh.com` channels;
- on each connection the relay writes `<host> <port>\\n`; the helper answers
  `ok\\n` and then passes bytes both ways, or `error <errno> <reason>\\n` and
  closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile

BANNER = "jupyter-relay-far-side 1"
HIGH_WATER = 1 << 20  # bytes queued towards one side before reading from the other pauses
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class Pipe(asyncio.Protocol):
    """One side of a bridged connection; `peer` is the other side."""

    def __init__(self, tcp: bool) -> None:
        self.tcp = tcp
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.sock: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)
        if self.tcp:
            self.sock = transport.get_extra_info("socket")
            if self.sock is not None:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._quickack()

    def _quickack(self) -> None:
        if QUICKACK is not None and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        if self.tcp:
            self._quickack()  # Linux falls back to delayed ACKs after a while: again
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        peer = self.peer.transport if self.peer is not None else None
        if peer is not None and peer.can_write_eof():
            peer.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        self.peer = None

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Front(Pipe):
    """The relay's side: reads the target line, dials it, then bridges."""

    def __init__(self) -> None:
        super().__init__(tcp=False)
        self.head = b""
        self.dialling = False
        self.dialler: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.dialling:  # the target line is read: from now on a pipe
            super().data_received(data)
            return
        self.head += data
        line, found, rest = self.head.partition(b"\n")
        if not found:
            if len(self.head) > 300:
                self._refuse(22, "no target line")
            return
        self.dialling = True
        assert self.transport is not None
        self.transport.pause_reading()
        self.dialler = asyncio.ensure_future(self._dial(line, rest))

    async def _dial(self, line: bytes, rest: bytes) -> None:
        try:
            host, port_text = line.decode("ascii").split()
            port = int(port_text)
            if not 0 < port < 65536 or not port_text.isdigit():
                raise ValueError(f"{port_text!r} is not a port")
            loop = asyncio.get_running_loop()
            _, back = await loop.create_connection(lambda: Pipe(tcp=True), host, port)
        except OSError as exc:
            number = exc.errno or 5  # EIO
            # asyncio's own text ("Connect call failed") names no reason: the errno's does.
            self._refuse(number, os.strerror(number) if exc.errno else str(exc))
            return
        except Exception as exc:  # a line that is no target: say so, never stay silent
            self._refuse(22, f"not a target line ({exc})")
            return
        assert isinstance(back, Pipe) and self.transport is not None
        if self.transport.is_closing():
            assert back.transport is not None
            back.transport.close()
            return
        self.peer, back.peer = back, self
        self.transport.write(b"ok\n")
        if rest:
            super().data_received(rest)
        self.transport.resume_reading()

    def _refuse(self, number: int, reason: str) -> None:
        if self.transport is not None:
            text = " ".join(reason.split())[:200]
            self.transport.write((f"error {number} {text}\n").encode())
            self.transport.close()


async def serve() -> None:
    directory = tempfile.mkdtemp(prefix="jupyter-relay-")  # mode 0700
    path = os.path.join(directory, "s")
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    try:
        server = await loop.create_unix_server(Front, path)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, finish)
        # The lifeline: stdin ends when the relay or the SSH connection goes.
        lifeline = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(lifeline), os.fdopen(0, "rb", 0)
        )
        sys.stdout.write(f"{BANNER} {path}\n")
        sys.stdout.flush()
        reading = asyncio.ensure_future(lifeline.read())
        reading.add_done_callback(lambda _: finish())
        await done
        server.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
