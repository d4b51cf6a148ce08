"""Telling a service manager how the relay is: systemd's `sd_notify` protocol.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET`; the relay sends
`READY=1` once it serves (the URL printed), `STOPPING=1` when it begins to
shut down, and a `STATUS=` line a person sees in `systemctl status`. Without
the variable nothing is sent. A datagram to a Unix socket, as systemd's own
`sd_notify` does (an `@` name is in the abstract namespace).
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send `fields` (e.g. "READY=1") to the service manager; False when there is none."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True
