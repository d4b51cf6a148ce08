"""The SSH channel adapter's greeting, sans I/O: a fake channel, a recording protocol.

A channel to the relay's far-side helper carries a greeting (`host port`); the
protocol is connected at once and the helper's first line is taken off what
follows: `ok` lets the rest through, `error <errno> <reason>` ends the
protocol's connection with ConnectionRefusedError. The helper's own side is
tested with real sockets in test_ssh_far_side.py.
"""

from __future__ import annotations

import asyncio
import errno

import asyncssh
from hypothesis import given
from hypothesis import strategies as st

from jupyter_relay.backends.channel import _Session

PEER = ("127.0.0.1", 8888)
GREETING = b"127.0.0.1 8888\n"


class FakeChannel:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = 0
        self.data = b""
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def opened(greeting: bytes = GREETING) -> tuple[_Session, FakeChannel, Recorder]:
    protocol = Recorder()
    session = _Session(protocol, PEER, greeting)
    chan = FakeChannel()
    session.connection_made(chan)  # type: ignore[arg-type]
    return session, chan, protocol


def feed(session: _Session, *pieces: bytes) -> None:
    for piece in pieces:
        session.data_received(piece, None)


def test_the_greeting_goes_out_and_the_protocol_is_connected_at_once() -> None:
    _, chan, protocol = opened()
    assert chan.written == [GREETING]
    assert protocol.made == 1 and protocol.data == b"" and protocol.lost == []


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=40))
def test_ok_is_taken_off_and_the_rest_passes_however_it_is_cut(body: bytes, cut: int) -> None:
    session, _, protocol = opened()
    stream = b"ok\n" + body
    feed(session, *[stream[i : i + cut] for i in range(0, len(stream), cut)])
    assert protocol.data == body and protocol.lost == []


def test_a_refusal_ends_the_connection_with_its_errno_and_reason() -> None:
    session, chan, protocol = opened()
    feed(session, b"error 111 Connection refused\nignored afterwards")
    assert chan.aborted
    (lost,) = protocol.lost
    assert isinstance(lost, ConnectionRefusedError) and lost.errno == errno.ECONNREFUSED
    assert "Connection refused (said the relay's helper" in str(lost)
    assert "127.0.0.1:8888" in str(lost)
    assert protocol.data == b""
    feed(session, b"more")
    session.connection_lost(None)  # the channel's own end is not told twice
    assert protocol.data == b"" and len(protocol.lost) == 1


def test_an_answer_that_is_not_the_helpers_is_a_refusal() -> None:
    session, _, protocol = opened()
    feed(session, b"HTTP/1.1 200 OK\r\n" * 100)
    (lost,) = protocol.lost
    assert isinstance(lost, ConnectionRefusedError), lost
    assert protocol.data == b""


def test_the_channel_ending_before_an_answer_ends_the_connection_once() -> None:
    session, _, protocol = opened()
    feed(session, b"o")
    session.connection_lost(None)
    session.connection_lost(None)
    assert protocol.lost == [None] and protocol.data == b""


def test_without_a_greeting_bytes_pass_untouched() -> None:
    session, chan, protocol = opened(b"")
    feed(session, b"ok\nHTTP/1.1 200 OK\r\n")
    assert chan.written == [] and protocol.data == b"ok\nHTTP/1.1 200 OK\r\n"
    error = asyncssh.ConnectionLost("gone")
    session.connection_lost(error)
    assert protocol.lost == [error]
