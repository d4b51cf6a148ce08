"""The kernel mixer: one kernelspec, kernel and session list over many backends.

What the mixer remembers (which backend owns a kernel or a session) is a
cache, never the truth: lists are asked of every backend at once, and an id
the cache does not know is looked for on every backend at once. So a relay
restarted in the middle of work, or a second relay beside the first, serves
every kernel at once. A moved session carries the id its client knows in its
own record on its new backend (see `names`), so that survives too.

No lock is held over network I/O: every call to a backend is awaited without
one, and the caches are plain dicts changed between awaits.
"""

from __future__ import annotations

from .fanout import ListingRefused, Located, Passed, Result
from .reconcile import Reconciling

__all__ = ["ListingRefused", "Located", "Mixer", "Passed", "Result"]


class Mixer(Reconciling):
    """The mixer: kernelspecs (`kernelspecs.py`), kernels (`kernels.py`) and sessions
    (`sessions.py`, with the kernels started for them reconciled: `reconcile.py`) of
    every backend as one, over the state and fan-out calls of `fanout.py`; each part
    a layer on the one before."""
