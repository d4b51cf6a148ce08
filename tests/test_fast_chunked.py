"""The chunked request body reader: decoded strictly, framed anew, however split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_relay.fast.chunked import BadChunk, ChunkedReader


def encode(pieces: list[bytes], *, extension: bool = False, trailer: bool = False) -> bytes:
    ext = b";name=value" if extension else b""
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in pieces if p)
    return body + b"0\r\n" + (b"X-Trailer: t\r\n" if trailer else b"") + b"\r\n"


def decode(framed: bytes) -> bytes:
    """The payload of chunked bytes the reader wrote (a strict reader of our own output)."""
    out, pos = b"", 0
    while True:
        line_end = framed.index(b"\r\n", pos)
        size = int(framed[pos:line_end], 16)
        pos = line_end + 2
        if size == 0:
            assert framed[pos:] == b"\r\n"
            return out
        out += framed[pos : pos + size]
        assert framed[pos + size : pos + size + 2] == b"\r\n"
        pos += size + 2


@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=40),
    extension=st.booleans(),
    trailer=st.booleans(),
    after=st.binary(max_size=40),
)
def test_any_split_gives_the_payload_and_stops_at_the_end(
    pieces: list[bytes], cuts: list[int], extension: bool, trailer: bool, after: bytes
) -> None:
    data = encode(pieces, extension=extension, trailer=trailer) + after
    reader, out, pos = ChunkedReader(), b"", 0
    for cut in [*cuts, len(data)]:
        if reader.done or pos >= len(data):
            break
        piece = data[pos : pos + cut]
        framed, taken = reader.feed(piece)
        out += framed
        pos += taken
        assert taken == len(piece) or reader.done  # only the body's end leaves bytes over
    assert reader.done
    assert data[pos:] == after  # the next request's bytes are not the body's
    assert decode(out) == b"".join(pieces)
    assert b";name" not in out and b"X-Trailer" not in out  # framing of the relay's own


@pytest.mark.parametrize(
    "data",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"\r\n",  # no size
        b"2\r\nabc\r\n0\r\n\r\n",  # longer than said
        b"2\nab\r\n0\r\n\r\n",  # bare line feed
        b"-1\r\n",
        b"1" * 5000,  # a size line without end
        b"10000000001\r\n",  # over 1 TiB
    ],
)
def test_broken_framing_is_refused(data: bytes) -> None:
    with pytest.raises(BadChunk):
        ChunkedReader().feed(data)


@given(st.binary(max_size=200))
def test_any_bytes_either_decode_or_raise_badchunk(data: bytes) -> None:
    reader = ChunkedReader()
    try:
        _, taken = reader.feed(data)
    except BadChunk:
        return
    assert 0 <= taken <= len(data)
