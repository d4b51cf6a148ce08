"""What the mixer's parts share: its state, and asking every backend at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..errors import (
    BackendBadAnswer,
    BackendError,
    BackendTimeout,
    NotFound,
)
from . import held
from .api import Answer, call, error_body
from .names import Model, Naming

log = logging.getLogger("jupyter_relay.mixer")


@dataclass(frozen=True)
class Result:
    """What a mixer operation answers: status, JSON body (None: no body), Location."""

    status: int
    body: Any = None
    location: str | None = None


class Passed(Exception):
    """A backend's own error answer, to be passed on to the client as it is."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.status)
        self.result = result


class ListingRefused(BackendError):
    """The backend does not let anyone list (a Kernel Gateway without KG_LIST_KERNELS)."""


@dataclass
class Located:
    """Where a client's session lives: backend, the backend's own id, its client model."""

    backend: str
    own_id: str
    model: Model


class Fanout:
    """The mixer's state, and the calls that fan out to every backend."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        primary: str | None,
        *,
        list_timeout: float,
        timeout: float,
        held_dir: Path | None = None,
        kernel_start_timeout: float | None = None,
        start_env: Mapping[str, str] | None = None,
    ) -> None:
        self.backends = backends
        self.held = held.HeldSessions(held_dir)
        self.naming = Naming(primary, tuple(backends))
        self.list_timeout = list_timeout
        self.timeout = timeout
        # Requests that may start a kernel wait this long (--kernel-start-timeout).
        self.kernel_start_timeout = kernel_start_timeout or timeout
        # The `env` of kernel starts on gateways, as GatewayClient sends it (start_env.py).
        self.start_env: Mapping[str, str] = dict(start_env or {})
        self.kernel_owner: dict[str, str] = {}
        # Mixed kernelspec name -> (backend, its own name), from the latest merged lists.
        self.spec_owners: dict[str, tuple[str, str]] = {}
        self.sessions: dict[str, tuple[str, str]] = {}  # client id -> (backend, own id)
        # Client session id -> its lock and how many hold or wait for it.
        self.session_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # Kernels started through this relay on gateways, for one that refuses to list.
        self.started_kernels: dict[str, set[str]] = {name: set() for name in backends}
        # Why a backend was left out of the last list of each kind (None: it was not).
        self.problems: dict[str, dict[str, str | None]] = {name: {} for name in backends}
        # Why a fetch still under way is partial, noted in `problems` when it ends.
        self.partial: dict[tuple[str, str], str] = {}

    # --- status -----------------------------------------------------------------------

    def problem(self, backend: str) -> str | None:
        """Why the backend's kernels were left out of (or partial in) the latest kernel list.

        Only a kernel list sets or clears it, so a list of another kind (which a
        gateway may answer while refusing to list kernels) never flaps it.
        """
        return self.problems[backend].get("api/kernels")

    def _note(self, backend: str, key: str, problem: str | None) -> None:
        self.problems[backend][key] = problem

    # --- plumbing ---------------------------------------------------------------------

    async def _call(
        self, backend: str, method: str, path: str, body: Any = None, *, slow: bool = False
    ) -> Answer:
        timeout = self.timeout if slow else self.list_timeout
        return await call(self.backends[backend], method, path, timeout=timeout, body=body)

    def _object(self, backend: str, answer: Answer) -> dict[str, Any]:
        if not isinstance(answer.data, dict):
            raise BackendBadAnswer(
                backend,
                f"backend '{backend}' answered with {type(answer.data).__name__}, not an object",
            )
        return answer.data

    def _passed(self, backend: str, answer: Answer) -> Result:
        """A backend's own error answer, passed on (in Jupyter's JSON shape)."""
        return Result(answer.status, error_body(backend, answer))

    async def _each(self, key: str, fetch: Callable[[str], Awaitable[Any]]) -> dict[str, Any]:
        """`fetch` from every backend at once; each within the list timeout.

        A backend that fails is left out, and why is kept for the status page
        (under `key`); the others' data is returned by backend name.
        """

        async def one(name: str) -> Any:
            # Noted when the fetch ends, so the status never shows a fetch half done.
            async with asyncio.timeout(self.list_timeout):
                return await fetch(name)

        order = list(self.backends)
        results = await asyncio.gather(*(one(n) for n in order), return_exceptions=True)
        out: dict[str, Any] = {}
        failures: list[BackendError] = []
        for name, result in zip(order, results, strict=True):
            if isinstance(result, TimeoutError):
                result = BackendTimeout(
                    name, f"backend '{name}' did not answer within {self.list_timeout:g} s"
                )
            if isinstance(result, BackendError):
                self.partial.pop((name, key), None)
                self._note(name, key, result.message)
                failures.append(result)
                log.warning("left %s out of /%s: %s", name, key, result.message)
            elif isinstance(result, BaseException):
                raise result
            else:
                self._note(name, key, self.partial.pop((name, key), None))
                out[name] = result
        if failures and not out:
            # Nothing to list: an empty list would tell clients every kernel is gone.
            first = failures[0]
            raise type(first)(first.backend, "; ".join(f.message for f in failures))
        return out

    async def _get_list(self, name: str, path: str, shape: type) -> Any:
        """GET `path` on one backend, expecting a JSON value of `shape`."""
        backend = self.backends[name]
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.list_timeout / 2
        pause = 0.05
        answer = await call(backend, "GET", path, timeout=self.list_timeout)
        # Jupyter answers 500 to a list while a kernel is half started (its model has
        # no last_activity yet); a moment later it lists again. Leaving the backend
        # out would tell clients its kernels are gone, so ask again, briefly.
        while answer.status >= 500 and loop.time() + pause < give_up:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            answer = await call(backend, "GET", path, timeout=self.list_timeout)
        if answer.status == 403 and backend.spec.kernels_only:
            raise ListingRefused(
                name,
                f"backend '{name}' does not allow listing /{path}; start the Kernel Gateway "
                "with KG_LIST_KERNELS=True, or the relay lists only the kernels it started "
                "there, and forgets them when restarted",
            )
        if not answer.ok:
            detail = error_body(name, answer)["message"]
            raise BackendError(
                name, f"backend '{name}' answered GET /{path} with {answer.status}: {detail}"
            )
        if not isinstance(answer.data, shape):
            got = type(answer.data).__name__
            raise BackendBadAnswer(
                name, f"backend '{name}' answered GET /{path} with {got}, not a {shape.__name__}"
            )
        return answer.data

    async def _probe(self, backend: str, path: str, ids: set[str]) -> list[Any]:
        """GET each remembered id on a backend that will not list them; drop the gone."""

        async def one(item: str) -> Any:
            answer = await call(
                self.backends[backend], "GET", f"{path}/{item}", timeout=self.list_timeout
            )
            if answer.status == 404:
                ids.discard(item)
            return answer.data if answer.ok else None

        results = await asyncio.gather(*(one(i) for i in list(ids)), return_exceptions=True)
        return [r for r in results if isinstance(r, dict)]

    async def _first(
        self,
        has: Callable[[str], Awaitable[bool]],
        what: str,
        missing: str = "",
        among: Sequence[str] | None = None,
    ) -> str:
        """The first backend for which `has` is true, asking all at once.

        NotFound if none has it (saying `missing`, when given, as a Jupyter server
        would, and which backends were asked in its reason); if some could not be
        asked, their error says so, since the thing may be there.
        """
        candidates = list(self.backends) if among is None else list(among)

        async def ask(name: str) -> tuple[str, bool]:
            return name, await has(name)

        tasks = [asyncio.ensure_future(ask(n)) for n in candidates]
        failures: list[BackendError] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    name, found = await next_done
                except BackendError as exc:
                    failures.append(exc)
                    continue
                if found:
                    return name
        finally:
            for task in tasks:
                task.cancel()
        asked = ", ".join(self.backends)
        if failures:
            first = failures[0]
            why = "; ".join(f.message for f in failures)
            error_type = BackendTimeout if isinstance(first, BackendTimeout) else type(first)
            raise error_type(
                first.backend, f"{what} was not found on the backends that answered; {why}"
            )
        if not missing:
            raise NotFound(f"{what} does not exist on any backend ({asked})")
        raise NotFound(missing, reason=f"Not Found on any backend ({asked})")
