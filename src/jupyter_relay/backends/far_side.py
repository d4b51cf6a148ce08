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

It must cost little where it runs: each connection is two threads blocked in
the kernel, and with `os.splice` (Linux, Python >= 3.10) bytes go from one
socket to the other through a pipe without passing through Python at all
(a 256 MiB download took 0.19 s of its CPU when it copied them with asyncio,
and bounded the relay's throughput); elsewhere a plain receive-and-send loop.

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

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading

BANNER = "jupyter-relay-far-side 1"
GREETING_MAX = 300  # bytes of a target line
CHUNK = 1 << 20  # bytes moved per call
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
SPLICE = getattr(os, "splice", None)  # Linux, Python >= 3.10
F_SETPIPE_SZ = 1031  # Linux's fcntl number; Python names it from 3.10


class Stop(Exception):
    """A signal asked the helper to end."""


def quickack(sock: socket.socket) -> None:
    """Linux falls back to delayed ACKs after a while: set it again after each read."""
    if QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)


def refuse(conn: socket.socket, number: int, reason: str) -> None:
    text = " ".join(reason.split())[:200]
    with contextlib.suppress(OSError):
        conn.sendall(f"error {number} {text}\n".encode())
    conn.close()


def target(line: bytes) -> tuple[str, int]:
    """`<host> <port>`, or ValueError saying why not."""
    host, port_text = line.decode("ascii").split()
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port")
    return host, int(port_text)


def dial(conn: socket.socket) -> socket.socket | None:
    """Read the target line, dial it, answer: the dialled socket, or None once refused."""
    head = b""
    while b"\n" not in head:
        if len(head) > GREETING_MAX:
            refuse(conn, errno.EINVAL, "no target line")
            return None
        data = conn.recv(4096)
        if not data:
            conn.close()
            return None
        head += data
    line, _, rest = head.partition(b"\n")
    try:
        host, port = target(line)
        back = socket.create_connection((host, port))
    except OSError as exc:
        number = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
        refuse(conn, number, exc.strerror or str(exc))
        return None
    except Exception as exc:  # a line that is no target: say so, never stay silent
        refuse(conn, errno.EINVAL, f"not a target line ({exc})")
        return None
    try:
        back.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        quickack(back)
        conn.sendall(b"ok\n")
        if rest:
            back.sendall(rest)
    except OSError:
        back.close()
        raise
    return back


def spliced(src: socket.socket, dst: socket.socket, tcp: bool) -> None:
    """Move bytes until src ends, through a pipe, without copying them into Python."""
    assert SPLICE is not None
    r, w = os.pipe()
    try:
        # Above the system's pipe-max-size this fails, and the default 64 KiB serves.
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
        while True:
            n = SPLICE(src.fileno(), w, CHUNK)
            if tcp:
                quickack(src)
            if n == 0:
                return
            while n:
                n -= SPLICE(r, dst.fileno(), n)
    finally:
        os.close(r)
        os.close(w)


def copied(src: socket.socket, dst: socket.socket, tcp: bool) -> None:
    """Move bytes until src ends, through one buffer."""
    buf = bytearray(CHUNK // 4)
    view = memoryview(buf)
    while True:
        n = src.recv_into(buf)
        if tcp:
            quickack(src)
        if n == 0:
            return
        dst.sendall(view[:n])


class Bridge:
    """Both directions of one connection; the sockets close when both have ended."""

    def __init__(self, front: socket.socket, back: socket.socket) -> None:
        self.front = front
        self.back = back
        self.left = 2
        self.lock = threading.Lock()

    def pump(self, src: socket.socket, dst: socket.socket, tcp: bool) -> None:
        try:
            (spliced if SPLICE is not None else copied)(src, dst, tcp)
        except OSError:  # one side broke: end both, which wakes the other direction
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        else:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # the end passes on, as a half-close
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.front.close()
            self.back.close()


def serve_one(conn: socket.socket) -> None:
    try:
        back = dial(conn)
    except OSError:
        conn.close()
        return
    if back is None:
        return
    bridge = Bridge(conn, back)
    threading.Thread(target=bridge.pump, args=(back, conn, True), daemon=True).start()
    bridge.pump(conn, back, False)


def accept(server: socket.socket) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def stop(signum: int, frame: object) -> None:
    raise Stop()


def main() -> None:
    threading.stack_size(512 * 1024)  # two threads a connection, each blocked in the kernel
    directory = tempfile.mkdtemp(prefix="jupyter-relay-")  # mode 0700
    path = os.path.join(directory, "s")
    try:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(128)
        threading.Thread(target=accept, args=(server,), daemon=True).start()
        sys.stdout.write(f"{BANNER} {path}\n")
        sys.stdout.flush()
        # The lifeline: stdin ends when the relay or the SSH connection goes.
        while os.read(0, 4096):
            pass
    except Stop:
        pass
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
