"""The fast path's client connection, driven byte by byte without sockets.

With the fakes of `fast_fakes`: a relay that routes nothing, so every request,
whether it passes the gate or not, is handed to a recording fallback (aiohttp's
place). What is checked is the connection's own
state machine: framing, hand-off with every byte, refusals, and waiting for a
kernel's owner with reading paused.
"""

from __future__ import annotations

import pytest

from jupyter_relay.errors import NotFound
from jupyter_relay.fast.head import HEAD_LIMIT

from .fast_fakes import KERNEL, Harness, request


async def test_a_head_in_pieces_is_handed_on_once_whole() -> None:
    h = Harness()
    data = request(token=False)
    for i in range(len(data) - 1):
        h.send(data[i : i + 1])
        assert h.fallbacks == []  # nothing decided before the blank line
    h.send(data[-1:])
    assert h.handed == data
    assert h.transport.protocol is h.fallbacks[0]
    assert h.transport.written == b""  # aiohttp answers, not the fast path


async def test_what_follows_a_handed_on_request_goes_with_it() -> None:
    h = Harness()
    first, second = request(token=False), request("/api/kernels")
    h.send(first + second[:10])
    h.send(second[10:])
    assert h.handed == first + second


async def test_a_head_over_the_limit_is_431_and_closed() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT)
    assert h.transport.written.startswith(b"HTTP/1.1 431 ")
    assert h.transport.closed
    assert h.fallbacks == []


@pytest.mark.parametrize("found", [False, True])
async def test_a_kernel_websocket_waits_for_its_owner_with_reading_paused(found: bool) -> None:
    h = Harness()
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    upgrade += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    head = request(f"/api/kernels/{KERNEL}/channels", extra=upgrade)
    h.send(head)
    assert h.conn.asking is not None  # the mixer is being asked
    assert not h.transport.reading
    assert h.fallbacks == []
    h.send(b"early bytes")  # already in flight: kept, in order
    assert h.fallbacks == []
    if found:
        h.relay.mixer.kernel_owner[KERNEL] = "b"  # as kernel_owner_of leaves it
        h.relay.mixer.answer.set_result("b")
    else:
        h.relay.mixer.answer.set_exception(NotFound(f"Kernel does not exist: {KERNEL}"))
    assert h.conn.asking is not None
    await h.conn.asking
    # This fake relay routes nothing even once the owner is known: aiohttp gets it all,
    # and the mixer was asked once.
    assert h.handed == head + b"early bytes"
    assert h.relay.mixer.asked == [KERNEL]
    assert h.transport.reading
