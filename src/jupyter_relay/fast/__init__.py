"""The fast path: plain HTTP requests forwarded with only their heads parsed.

Every client connection starts here. For each request the head is framed by
its blank line, parsed by llhttp (`httptools`), and checked with the same
pure functions the aiohttp path uses (token, Origin, routing, header and
path rewriting). A plain request (HTTP/1.1, a common method, no `Upgrade`,
no `Expect`, no chunked body, token valid, a backend that offers raw
connections) is written to a pooled upstream connection and the answer is
spliced back: only the response head is rewritten, body bytes pass as they
are, with backpressure both ways.

Anything else is handed to aiohttp on the same connection, from the first
byte of that request: aiohttp's protocol takes over the transport and gets
the buffered bytes. So refusals, redirects, websockets and the relay's own
endpoints keep one implementation, and this module stays small.
"""

from .server import FastServer

__all__ = ["FastServer"]
