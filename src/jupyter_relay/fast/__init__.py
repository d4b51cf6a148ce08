"""The engine: every request and websocket, forwarded with only its heads parsed.

Every client connection is served here. For each request the head is framed
by its blank line, parsed by llhttp (`httptools`), checked by the gate, and
routed (`Relay.route`, from `routes.TABLE`) to a backend, a port-proxy
target, an app, or the relay's own aiohttp application (the `House`). The
request is written to a pooled upstream connection and the answer spliced
back: only heads are rewritten, body bytes pass as they are, with
backpressure both ways. A websocket is a `Tunnel`: the handshake forwarded,
then bytes both ways.
"""

from .house import House
from .server import FastServer

__all__ = ["FastServer", "House"]
