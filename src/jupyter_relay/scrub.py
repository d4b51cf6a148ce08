"""Taking a backend's secrets (its token) out of its pages as they stream past.

Jupyter prints its token into the pages it serves; a client of the relay must never
see a backend's token. A page is passed on chunk by chunk, as it arrives (a page that
streams, such as an event stream or a long report, keeps streaming): only the bytes
at the end of a chunk that may be the start of a secret, split across two chunks,
wait for the next chunk to tell.

What is taken out is each occurrence of a secret in the page as the backend sent it.
The pieces around an occurrence are not examined again: a page holding a secret's
two halves around the secret itself was written by someone who knew the secret.
"""

from __future__ import annotations

from collections.abc import Iterable


class Scrubber:
    """`page.replace(secret, b"")`, for each secret, over any chunking of the page."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        """What of the page so far can be sent now, its secrets taken out."""
        data = self._remove(self.held + chunk if self.held else chunk)
        keep = self._partial(data)
        self.held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def flush(self) -> bytes:
        """The page has ended: what was held is not the start of a secret after all."""
        held, self.held = self.held, b""
        return held

    def _remove(self, data: bytes) -> bytes:
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"")
        return data

    def _partial(self, data: bytes) -> int:
        """The length of the longest end of `data` that is the beginning of a secret."""
        longest = 0
        for secret in self.secrets:
            for size in range(min(len(secret) - 1, len(data)), longest, -1):
                if data.endswith(secret[:size]):
                    longest = size
                    break
        return longest
