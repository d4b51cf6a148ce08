"""A chunked request body, read as it arrives and framed anew for the backend.

The client's framing is decoded, strictly (hex sizes, CRLF, no size beyond
`MAX_CHUNK`), and each piece of payload written again as one chunk: what
the backend sees is framing the relay wrote, so nothing the client hid in
its framing (extensions, trailers, a second message) reaches it. Sans-IO:
`feed` takes bytes and says how many belonged to the body.
"""

from __future__ import annotations

import enum

MAX_CHUNK = 1 << 40
MAX_LINE = 4096  # a size line with its extensions, a trailer field


class BadChunk(ValueError):
    """The client's chunked framing is broken; the message says where."""


class _State(enum.Enum):
    SIZE = 1  # reading a size line
    DATA = 2  # inside a chunk's payload
    DATA_END = 3  # the CRLF after a payload
    TRAILER = 4  # trailer fields until an empty line
    DONE = 5


class ChunkedReader:
    """Decodes one chunked body; `feed` returns the re-framed bytes and the bytes it took."""

    def __init__(self) -> None:
        self.state = _State.SIZE
        self.left = 0
        self.line = bytearray()

    @property
    def done(self) -> bool:
        return self.state is _State.DONE

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """(bytes for the backend, how many of `data` were the body's); raises `BadChunk`."""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and self.state is not _State.DONE:
            if self.state is _State.DATA:
                take = min(self.left, end - pos)
                out.append(b"%x\r\n%s\r\n" % (take, data[pos : pos + take]))
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = _State.DATA_END
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            self.line += data[pos:stop]
            pos = stop
            if len(self.line) > MAX_LINE:
                raise BadChunk("a chunk-size line or trailer field is too long")
            if newline < 0:
                continue
            line, self.line = bytes(self.line), bytearray()
            if not line.endswith(b"\r\n"):
                raise BadChunk("chunked framing lines must end with CRLF")
            self._line(line[:-2], out)
        return b"".join(out), pos

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if self.state is _State.DATA_END:
            if line:
                raise BadChunk("a chunk's data is longer than its size says")
            self.state = _State.SIZE
        elif self.state is _State.SIZE:
            size_text = line.partition(b";")[0].strip(b" \t")
            if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise BadChunk(f"bad chunk size {line[:40]!r}")
            size = int(size_text, 16)
            if size > MAX_CHUNK:
                raise BadChunk("a chunk larger than 1 TiB")
            if size == 0:
                self.state = _State.TRAILER
            else:
                self.left = size
                self.state = _State.DATA
        elif self.state is _State.TRAILER and not line:
            self.state = _State.DONE
            out.append(b"0\r\n\r\n")
