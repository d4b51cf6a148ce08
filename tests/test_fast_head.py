"""Pure parts of the engine: head parsing and websocket frame boundaries."""

from __future__ import annotations

import os

import pytest

from jupyter_relay.fast.head import BadHead, Head, parse_head
from jupyter_relay.fast.tunnel import FrameCursor


def frame(payload: bytes, opcode: int = 2, masked: bool = False, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, (0x80 if masked else 0) | n])
    elif n < 65536:
        head = bytes([first, (0x80 if masked else 0) | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, (0x80 if masked else 0) | 127]) + n.to_bytes(8, "big")
    return head + (os.urandom(4) if masked else b"") + payload


STREAM = (
    frame(b"hi", opcode=1)
    + frame(b"x" * 300)
    + frame(b"y" * 70_000, masked=True)
    + frame(b"", opcode=9)
    + frame(b"part", fin=False)
    + frame(b"end", opcode=0)
)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 100, 4096, len(STREAM)])
def test_frame_cursor_finds_boundaries_however_split(split: int) -> None:
    cursor = FrameCursor()
    for i in range(0, len(STREAM), split):
        cursor.feed(STREAM[i : i + split])
    assert cursor.at_boundary


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 10, 301, len(STREAM) - 1])
def test_frame_cursor_knows_it_is_mid_frame(cut: int) -> None:
    cursor = FrameCursor()
    cursor.feed(STREAM[:cut])
    assert not cursor.at_boundary
    cursor.feed(STREAM[cut:])
    assert cursor.at_boundary


AUTH = "Authorization: token t\r\n"


@pytest.mark.parametrize(
    ("head", "outcome"),
    [
        (f"GET /lab HTTP/1.1\r\nHost: h\r\n{AUTH}\r\n", "plain"),
        ("POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", "plain"),
        ("GET /lab HTTP/1.0\r\nHost: h\r\n\r\n", "http10"),
        ("HEAD /lab HTTP/1.1\r\nHost: h\r\n\r\n", "plain"),
        ("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
        (
            "PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "plain",
        ),
        ("BREW /x HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # llhttp knows no such method
        ("PROPFIND /x HTTP/1.1\r\nHost: h\r\n\r\n", "plain"),
        ("GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "plain"),
        ("GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET //evil/x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        ("GET /x HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (
            "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
    ],
)
def test_parse_head_says_how_each_head_is_forwarded(head: str, outcome: str | int) -> None:
    parsed = parse_head(head.encode())
    if isinstance(outcome, int):
        assert isinstance(parsed, BadHead) and parsed.status == outcome
        return
    assert isinstance(parsed, Head)
    assert parsed.raw == head.encode()
    assert parsed.chunked is (outcome == "chunked")
    assert parsed.http10 is (outcome == "http10")
    assert not parsed.websocket


def test_parse_head_websocket_and_keep_alive() -> None:
    ws = parse_head(
        b"GET /api/kernels/k/channels?session_id=s HTTP/1.1\r\nHost: h\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5\r\n\r\n"
    )
    assert isinstance(ws, Head) and ws.websocket and ws.target.endswith("?session_id=s")
    closing = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert isinstance(closing, Head) and not closing.keep_alive
    plain = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(plain, Head) and plain.keep_alive and not plain.websocket
    old = parse_head(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    assert isinstance(old, Head) and not old.keep_alive  # 1.0: closed unless asked
