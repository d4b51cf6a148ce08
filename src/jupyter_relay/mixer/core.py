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

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import Backend
from ..errors import (
    BackendBadAnswer,
    BackendError,
    BackendTimeout,
    BackendUnreachable,
    NotFound,
)
from . import held, names
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


class Mixer:
    def __init__(
        self,
        backends: Mapping[str, Backend],
        primary: str | None,
        *,
        list_timeout: float,
        timeout: float,
        held_dir: Path | None = None,
    ) -> None:
        self.backends = backends
        self.held = held.HeldSessions(held_dir)
        self.naming = Naming(primary, tuple(backends))
        self.list_timeout = list_timeout
        self.timeout = timeout
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

    # --- kernelspecs ------------------------------------------------------------------

    async def list_specs(self) -> Result:
        answers = await self._each(
            "api/kernelspecs", lambda b: self._get_list(b, "api/kernelspecs", dict)
        )
        found = [(b, data) for b, data in answers.items() if isinstance(data, dict)]
        owners: dict[str, tuple[str, str]] = {}
        merged = names.merge_specs(found, self.naming, owners)
        listed = set(answers)
        # Backends left out this time keep their names until they answer again.
        self.spec_owners = {
            n: o for n, o in self.spec_owners.items() if o[0] not in listed and n not in owners
        }
        self.spec_owners.update(owners)
        return Result(200, merged)

    async def get_spec(self, mixed: str) -> Result:
        backend, own = await self._spec_owner(mixed)
        answer = await self._call(backend, "GET", f"api/kernelspecs/{own}")
        if not answer.ok:
            return self._passed(backend, answer)
        return Result(200, names.spec_model(self._object(backend, answer), backend, self.naming))

    async def spec_owner(self, mixed: str) -> tuple[Backend, str]:
        backend, own = await self._spec_owner(mixed)
        return self.backends[backend], own

    async def _spec_owner(self, mixed: str) -> tuple[str, str]:
        """The backend and its own name for a mixed kernelspec name; NotFound if none.

        The merged list decides (a primary spec named like `gpu--x` is the
        primary's); a name it has not listed yet is looked up by listing again.
        """
        if mixed not in self.spec_owners:
            with contextlib.suppress(BackendError):
                await self.list_specs()
        if mixed in self.spec_owners:
            return self.spec_owners[mixed]
        unknown = self.naming.unknown_prefix(mixed)
        parsed = self.naming.parse(mixed)
        if parsed is None or (unknown and not await self._primary_has(mixed)):
            why = f"no backend named {unknown!r}" if unknown else "no backend holds files"
            raise NotFound(
                f"no kernelspec {mixed!r}: {why}; known backends: {', '.join(self.backends)} "
                f"(other backends' kernels are named <backend>{names.SEP}<kernel>)"
            )
        return parsed

    async def _primary_has(self, name: str) -> bool:
        primary = self.naming.primary
        if primary is None:
            return False
        answer = await self._call(primary, "GET", f"api/kernelspecs/{name}")
        return answer.ok

    # --- kernels ----------------------------------------------------------------------

    async def list_kernels(self) -> Result:
        answers = await self._each("api/kernels", self._kernels_of)
        per_backend = []
        for backend, models in answers.items():
            self._learn_kernels(backend, models)
            per_backend.append(
                (backend, [names.kernel_model(m, backend, self.naming) for m in models])
            )
        return Result(200, names.merge_kernels(per_backend))

    async def _kernels_of(self, backend: str) -> list[dict[str, Any]]:
        try:
            data = await self._get_list(backend, "api/kernels", list)
        except ListingRefused as refused:
            self.partial[(backend, "api/kernels")] = refused.message
            data = await self._probe(backend, "api/kernels", self.started_kernels[backend])
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _started(self, backend: str, kernel_id: str) -> None:
        self.kernel_owner[kernel_id] = backend
        if self._holds(backend):
            self.started_kernels[backend].add(kernel_id)

    def _learn_kernels(self, backend: str, models: Sequence[Mapping[str, Any]]) -> None:
        listed = {m["id"] for m in models}
        for kernel_id in [k for k, b in self.kernel_owner.items() if b == backend]:
            if kernel_id not in listed:
                del self.kernel_owner[kernel_id]
        for kernel_id in listed:
            self.kernel_owner[kernel_id] = backend

    async def start_kernel(self, body: Any) -> Result:
        model = dict(body) if isinstance(body, dict) else {}
        backend, own = await self._kernel_target(model.get("name"))
        if own is not None:
            model["name"] = own
        answer = await self._call(backend, "POST", "api/kernels", model, slow=True)
        if not answer.ok:
            return self._passed(backend, answer)
        kernel = self._object(backend, answer)
        kernel_id = str(kernel.get("id", ""))
        self._started(backend, kernel_id)
        return Result(
            answer.status,
            names.kernel_model(kernel, backend, self.naming),
            f"/api/kernels/{kernel_id}",
        )

    async def _kernel_target(self, name: Any) -> tuple[str, str | None]:
        """Where a kernel of spec `name` starts: (backend, its own spec name or None)."""
        if isinstance(name, str) and name:
            return await self._spec_owner(name)
        primary = self.naming.primary
        if primary is not None:
            return primary, None
        specs = await self.list_specs()
        default = specs.body.get("default") if isinstance(specs.body, dict) else None
        if not default:
            raise NotFound("no kernelspec named and no backend offers a default one")
        return await self._spec_owner(default)

    async def kernel(self, kernel_id: str, action: str = "") -> Result:
        """GET a kernel, or POST one of its actions (`restart`, `interrupt`), at its owner."""
        backend = await self.kernel_owner_of(kernel_id)
        method = "POST" if action else "GET"
        path = f"api/kernels/{kernel_id}" + (f"/{action}" if action else "")
        answer = await self._call(backend, method, path, {} if action else None, slow=True)
        if answer.status == 404:
            self.kernel_owner.pop(kernel_id, None)
        if not answer.ok:
            return self._passed(backend, answer)
        if answer.data is None:
            return Result(answer.status)
        kernel = self._object(backend, answer)
        return Result(answer.status, names.kernel_model(kernel, backend, self.naming))

    async def delete_kernel(self, kernel_id: str) -> Result:
        backend = await self.kernel_owner_of(kernel_id)
        answer = await self._call(backend, "DELETE", f"api/kernels/{kernel_id}", slow=True)
        if answer.ok or answer.status == 404:
            self.kernel_owner.pop(kernel_id, None)
            self.started_kernels[backend].discard(kernel_id)
        if not answer.ok:
            return self._passed(backend, answer)
        return Result(answer.status)

    async def kernel_owner_of(self, kernel_id: str) -> str:
        """The backend that runs `kernel_id`: known, or asked of every backend at once."""
        known = self.kernel_owner.get(kernel_id)
        if known is not None:
            return known
        path = f"api/kernels/{kernel_id}"
        # jupyter_server's own words (clients and its tests compare them); ours in `reason`.
        missing = f"Kernel does not exist: {kernel_id}"
        backend = await self._first(lambda b: self._has(b, path), f"kernel {kernel_id}", missing)
        self.kernel_owner[kernel_id] = backend
        return backend

    async def _has(self, backend: str, path: str) -> bool:
        answer = await call(self.backends[backend], "GET", path, timeout=self.list_timeout)
        if answer.ok:
            return True
        if answer.status == 404:
            return False
        raise BackendError(
            backend, f"backend '{backend}' answered GET /{path} with {answer.status}"
        )

    # --- sessions ---------------------------------------------------------------------
    # A session lives where its kernel runs: on a Jupyter backend, in that
    # server's session API; on a gateway, in `held` (see held.py).

    def _holds(self, backend: str) -> bool:
        return self.backends[backend].spec.kernels_only

    async def list_sessions(self) -> Result:
        return Result(200, [s.model for s in await self._all_sessions()])

    async def _all_sessions(self) -> list[Located]:
        answers = await self._each("api/sessions", self._sessions_of)
        per_backend = [(b, data) for b, data in answers.items() if isinstance(data, list)]
        located = []
        for backend, _own_id, raw in names.merge_sessions(per_backend):
            located.append(self._learn_session(backend, raw))
        # Forget sessions that the backends which answered no longer have (a
        # backend left out keeps its entries). This is a cache: a session it
        # misses is found by asking the backends.
        listed, answered = {s.model["id"] for s in located}, set(answers)
        for session_id, (backend, _) in list(self.sessions.items()):
            if backend in answered and session_id not in listed:
                del self.sessions[session_id]
        return located

    async def _sessions_of(self, backend: str) -> list[dict[str, Any]]:
        if self._holds(backend):
            records = self.held.of(backend, self.backends[backend].spec.public_url())
            found = await asyncio.gather(*(self._held_model(r) for r in records))
            return [m for m in found if m is not None]
        data = await self._get_list(backend, "api/sessions", list)
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def _held_model(self, record: held.Record) -> dict[str, Any] | None:
        """The record with its kernel's current model; None (and forgotten) if it is gone."""
        backend = str(record["backend"])
        answer = await self._call(backend, "GET", f"api/kernels/{record['kernel_id']}")
        if answer.status == 404:
            log.info("session %s: its kernel on %s is gone; ending it", record["id"], backend)
            self.held.drop(str(record["id"]))
            return None
        if not answer.ok:
            raise BackendError(backend, f"backend '{backend}' answered {answer.status}")
        return held.model(record, self._object(backend, answer))

    def _learn_session(self, backend: str, raw: Mapping[str, Any]) -> Located:
        model = names.session_model(raw, backend, self.naming)
        own_id = str(raw.get("id", ""))
        self.sessions[model["id"]] = (backend, own_id)
        kernel = raw.get("kernel")
        if isinstance(kernel, dict) and isinstance(kernel.get("id"), str):
            self.kernel_owner[kernel["id"]] = backend
        return Located(backend, own_id, model)

    async def find_session(self, session_id: str) -> Located:
        """Where a client's session lives now: cached, listed, or asked of every backend."""
        cached = self.sessions.get(session_id)
        if cached is not None:
            raw = await self._session_at(*cached)
            if raw is not None:
                return self._learn_session(cached[0], raw)
            self.sessions.pop(session_id, None)
        self.held.reload()
        for located in await self._all_sessions():
            if located.model["id"] == session_id:
                return located
        unasked = [p["api/sessions"] for p in self.problems.values() if p.get("api/sessions")]
        if unasked:  # it may be on a backend that did not answer
            name = next(b for b, p in self.problems.items() if p.get("api/sessions"))
            raise BackendUnreachable(
                name,
                f"session {session_id} is not on the backends that answered; "
                + "; ".join(str(u) for u in unasked),
            )
        raise NotFound(f"session {session_id} does not exist on any backend")

    async def _session_at(self, backend: str, own_id: str) -> dict[str, Any] | None:
        if self._holds(backend):
            record = self.held.get(own_id)
            return await self._held_model(record) if record else None
        answer = await self._call(backend, "GET", f"api/sessions/{own_id}")
        if answer.status == 404:
            return None
        if not answer.ok:
            raise Passed(self._passed(backend, answer))
        return self._object(backend, answer)

    async def get_session(self, session_id: str) -> Result:
        return Result(200, (await self.find_session(session_id)).model)

    async def create_session(self, body: Any) -> Result:
        model = dict(body) if isinstance(body, dict) else {}
        backend, kernel = await self._session_kernel(model.get("kernel"))
        raw = await self._create_session_on(backend, model, kernel, None)
        located = self._learn_session(backend, raw)
        return Result(201, located.model, f"/api/sessions/{located.model['id']}")

    async def _session_kernel(self, kernel: Any) -> tuple[str, dict[str, Any] | None]:
        """Where a session's kernel is (or starts): (backend, the kernel field to send it)."""
        if not isinstance(kernel, dict):
            backend, _ = await self._kernel_target(None)
            return backend, None
        if isinstance(kernel.get("id"), str) and kernel["id"]:
            # A running kernel's session goes where it runs. An id no backend has is a
            # kernel the client asks to start under that id, as jupyter_server allows:
            # it starts where a kernel of its spec would.
            with contextlib.suppress(NotFound):
                return await self.kernel_owner_of(kernel["id"]), dict(kernel)
        backend, own = await self._kernel_target(kernel.get("name"))
        out = dict(kernel)
        if own is not None:
            out["name"] = own
        return backend, out

    async def _create_session_on(
        self,
        backend: str,
        fields: Mapping[str, Any],
        kernel: dict[str, Any] | None,
        client_id: str | None,
    ) -> dict[str, Any]:
        """Create a session on `backend`; `client_id` set when it moves there."""
        if self._holds(backend):
            return await self._create_held(backend, fields, kernel, client_id)
        body = dict(fields)
        body["kernel"] = kernel
        if kernel is None:
            body.pop("kernel")
        if client_id is not None:
            body["type"] = names.mark(body.get("type"), client_id)
        answer = await self._call(backend, "POST", "api/sessions", body, slow=True)
        if not answer.ok:
            raise Passed(self._passed(backend, answer))
        return self._object(backend, answer)

    async def _create_held(
        self,
        backend: str,
        fields: Mapping[str, Any],
        kernel: dict[str, Any] | None,
        client_id: str | None,
    ) -> dict[str, Any]:
        url = self.backends[backend].spec.public_url()
        path = fields.get("path")
        if client_id is None:  # Jupyter answers a second session for a path with the first
            same = next((r for r in self.held.of(backend, url) if r["path"] == path), None)
            existing = await self._held_model(same) if same else None
            if existing is not None:
                return existing
        kernel_model = await self._gateway_kernel(backend, kernel, path)
        record = {
            "id": client_id or str(uuid.uuid4()),
            "backend": backend,
            "url": url,
            "path": path,
            "name": fields.get("name"),
            "type": fields.get("type"),
            "kernel_id": kernel_model["id"],
        }
        self.held.put(record)
        return held.model(record, kernel_model)

    async def _gateway_kernel(
        self, backend: str, kernel: dict[str, Any] | None, path: Any
    ) -> dict[str, Any]:
        """The kernel a held session gets: the one named by id, or a new one."""
        if kernel is not None and kernel.get("id"):
            answer = await self._call(backend, "GET", f"api/kernels/{kernel['id']}")
        else:
            body = {"name": kernel["name"]} if kernel and kernel.get("name") else {}
            if isinstance(path, str):
                body["path"] = path
            answer = await self._call(backend, "POST", "api/kernels", body, slow=True)
        if not answer.ok:
            raise Passed(self._passed(backend, answer))
        model = self._object(backend, answer)
        self._started(backend, str(model.get("id")))
        return model

    @contextlib.asynccontextmanager
    async def _session_turn(self, session_id: str) -> AsyncIterator[None]:
        """One change of one session at a time (PATCHes and DELETEs of it queue up).

        The lock is the session's own: changes of other sessions, and every read,
        go on meanwhile. It is forgotten when nobody waits for it.
        """
        entry = self.session_locks.setdefault(session_id, (asyncio.Lock(), [0]))
        lock, waiting = entry
        waiting[0] += 1
        try:
            async with lock:
                yield
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                self.session_locks.pop(session_id, None)

    async def patch_session(self, session_id: str, body: Any) -> Result:
        if not isinstance(body, dict):
            return Result(400, {"message": "No JSON data provided", "reason": "Bad Request"})
        async with self._session_turn(session_id):
            return await self._patch_session(session_id, body)

    async def _patch_session(self, session_id: str, body: dict[str, Any]) -> Result:
        here = await self.find_session(session_id)
        target, kernel = here.backend, None
        if isinstance(body.get("kernel"), dict):
            target, kernel = await self._session_kernel(body["kernel"])
        if target != here.backend:
            return await self._move_session(session_id, here, target, kernel, body)
        changes = {k: v for k, v in body.items() if k != "kernel"}
        if kernel is not None:
            changes["kernel"] = kernel
        if self._holds(here.backend):
            raw = await self._update_held(here, changes, kernel)
        else:
            if "type" in changes and here.own_id != session_id:
                changes["type"] = names.mark(changes["type"], session_id)
            path = f"api/sessions/{here.own_id}"
            answer = await self._call(here.backend, "PATCH", path, changes, slow=True)
            if not answer.ok:
                return self._passed(here.backend, answer)
            raw = self._object(here.backend, answer)
        return Result(200, self._learn_session(here.backend, raw).model)

    async def _update_held(
        self, here: Located, changes: Mapping[str, Any], kernel: dict[str, Any] | None
    ) -> dict[str, Any]:
        gone = NotFound(f"session {here.own_id} does not exist any more (it was deleted)")
        stored = self.held.get(here.own_id)
        if stored is None:  # e.g. deleted through another relay sharing the state
            raise gone
        record = dict(stored)
        for key in ("path", "name", "type"):
            if key in changes:
                record[key] = changes[key]
        old_kernel = record.get("kernel_id")
        if kernel is not None:
            model = await self._gateway_kernel(here.backend, kernel, record.get("path"))
            record["kernel_id"] = model["id"]
            if self.held.get(here.own_id) is None:  # deleted while the kernel started
                await self._end_kernel(here.backend, str(model["id"]))
                raise gone
        self.held.put(record)
        if old_kernel and old_kernel != record["kernel_id"]:  # as Jupyter does
            await self._end_kernel(here.backend, str(old_kernel))
        raw = await self._held_model(record)
        if raw is None:
            raise NotFound(f"session {here.own_id}: its kernel is gone")
        return raw

    async def _move_session(
        self,
        session_id: str,
        here: Located,
        target: str,
        kernel: dict[str, Any] | None,
        changes: Mapping[str, Any],
    ) -> Result:
        """Recreate the session on `target` under the client's id, then end the old one.

        Ending it shuts its kernel down, as Jupyter does with the old kernel when
        a PATCH changes a session's kernel.
        """
        current = here.model
        fields = {key: changes.get(key, current.get(key)) for key in ("path", "name", "type")}
        raw = await self._create_session_on(target, fields, kernel, session_id)
        located = self._learn_session(target, raw)
        try:
            await self._end_session(here.backend, here.own_id)
        except BackendError as exc:
            log.warning("session %s moved; cannot end its old record: %s", session_id, exc.message)
        log.info("session %s moved from %s to %s", session_id, here.backend, target)
        return Result(200, dict(located.model, id=session_id))

    async def delete_session(self, session_id: str) -> Result:
        async with self._session_turn(session_id):
            here = await self.find_session(session_id)
            result = await self._end_session(here.backend, here.own_id)
            if result.status < 300 or result.status == 404:
                self.sessions.pop(session_id, None)
        return result

    async def _end_session(self, backend: str, own_id: str) -> Result:
        """End a session where it lives, and so its kernel."""
        if self._holds(backend):
            record = self.held.get(own_id)
            self.held.drop(own_id)
            if record is not None:
                await self._end_kernel(backend, str(record["kernel_id"]))
            return Result(204)
        answer = await self._call(backend, "DELETE", f"api/sessions/{own_id}", slow=True)
        if not answer.ok:
            return self._passed(backend, answer)
        return Result(answer.status)

    async def _end_kernel(self, backend: str, kernel_id: str) -> None:
        answer = await self._call(backend, "DELETE", f"api/kernels/{kernel_id}", slow=True)
        if not answer.ok and answer.status != 404:
            log.warning("kernel %s on %s: shutdown answered %s", kernel_id, backend, answer.status)
        self.kernel_owner.pop(kernel_id, None)
        self.started_kernels[backend].discard(kernel_id)

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
        error = NotFound(missing)
        error.reason = f"Not Found on any backend ({asked})"
        raise error
