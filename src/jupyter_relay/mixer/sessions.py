"""The mixer's sessions: one list, each session's backend, moving a session between backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..errors import (
    BackendError,
    BackendUnreachable,
    NotFound,
)
from . import held, names
from .fanout import Located, Passed, Result
from .kernels import Kernels

log = logging.getLogger("jupyter_relay.mixer")
# Seconds a gateway may take past the relay's own timeout to answer a kernel start.
START_MARGIN = 30.0


class Sessions(Kernels):
    """Sessions: the merged list, creating, moving between backends and ending them."""

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
            records = await self.held.of(self._url(backend))
            found = await asyncio.gather(*(self._held_model(backend, r) for r in records))
            return [m for m in found if m is not None]
        data = await self._get_list(backend, "api/sessions", list)
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _url(self, backend: str) -> str:
        """What held records know a gateway by: its URL (relays may name it differently)."""
        return held.gateway_key(self.backends[backend].spec.public_url())

    async def _held_model(self, backend: str, record: held.Record) -> dict[str, Any] | None:
        """The record with its kernel's current model; None (and forgotten) if it is gone."""
        answer = await self._call(backend, "GET", f"api/kernels/{record['kernel_id']}")
        if answer.status == 404:
            log.info("session %s: its kernel on %s is gone; ending it", record["id"], backend)
            await self.held.drop(str(record["id"]))
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
            record = await self.held.get(own_id)
            if record is None or record["url"] != self._url(backend):
                return None
            return await self._held_model(backend, record)
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
        answer = await self._start(backend, "POST", "api/sessions", body)
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
        url = self._url(backend)
        path = fields.get("path")
        if client_id is None:  # Jupyter answers a second session for a path with the first
            same = next((r for r in await self.held.of(url) if r["path"] == path), None)
            existing = await self._held_model(backend, same) if same else None
            if existing is not None:
                return existing
        record = {
            "id": client_id or str(uuid.uuid4()),
            "backend": backend,
            "url": url,
            "path": path,
            "name": fields.get("name"),
            "type": fields.get("type"),
            "kernel_id": None,
        }
        kernel_model = await self._gateway_kernel(backend, kernel, record, client_id is not None)
        record["kernel_id"] = kernel_model["id"]
        await self.held.settle(str(kernel_model["id"]), record)
        return held.model(record, kernel_model)

    async def _gateway_kernel(
        self, backend: str, kernel: dict[str, Any] | None, session: held.Record, change: bool
    ) -> dict[str, Any]:
        """The kernel a held session gets: the one named by id, or a new one.

        A new one is recorded as pending first, under an id the relay chooses (Enterprise
        Gateway takes it from `env.KERNEL_ID`, jupyter_server's Kernel Gateway from
        `kernel_id`), so a relay that dies before the session is saved leaves a record
        to reconcile (see `orphans.py`), not an orphan. The caller settles it.
        """
        if kernel is not None and kernel.get("id"):
            answer = await self._call(backend, "GET", f"api/kernels/{kernel['id']}")
        else:
            kernel_id = str(uuid.uuid4())
            body: dict[str, Any] = {"name": kernel["name"]} if kernel and kernel.get("name") else {}
            if isinstance(session.get("path"), str):
                body["path"] = session["path"]
            body["kernel_id"] = kernel_id
            body["env"] = {"KERNEL_ID": kernel_id}
            await self.held.add_pending(self._pending(backend, kernel_id, session, change))
            answer = await self._start(backend, "POST", "api/kernels", body)
            if not answer.ok:  # an answer, so nothing runs; a timeout is left to reconcile
                await self.held.settle(kernel_id)
            elif isinstance(answer.data, dict) and answer.data.get("id") != kernel_id:
                await self.held.settle(kernel_id)  # a gateway that chose its own id
        if not answer.ok:
            raise Passed(self._passed(backend, answer))
        model = self._object(backend, answer)
        self._started(backend, str(model.get("id")))
        return model

    def _pending(
        self, backend: str, kernel_id: str, session: held.Record, change: bool
    ) -> held.Pending:
        return held.Pending(
            kernel_id=kernel_id,
            url=self._url(backend),
            backend=backend,
            session_id=str(session["id"]),
            path=session.get("path"),
            name=session.get("name"),
            type=session.get("type"),
            change=change,
            owner=held.this_owner(),
            # When its start has surely ended: the relay's own wait for it, and a margin.
            deadline=time.time() + self.kernel_start_timeout + START_MARGIN,
        )

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
            if kernel is not None:  # it may start one
                answer = await self._start(here.backend, "PATCH", path, changes)
            else:
                answer = await self._call(here.backend, "PATCH", path, changes, slow=True)
            if not answer.ok:
                return self._passed(here.backend, answer)
            raw = self._object(here.backend, answer)
        return Result(200, self._learn_session(here.backend, raw).model)

    async def _update_held(
        self, here: Located, changes: Mapping[str, Any], kernel: dict[str, Any] | None
    ) -> dict[str, Any]:
        gone = NotFound(f"session {here.own_id} does not exist any more (it was deleted)")
        stored = await self.held.get(here.own_id)
        if stored is None:  # e.g. deleted through another relay sharing the state
            raise gone
        record = dict(stored)
        for key in ("path", "name", "type"):
            if key in changes:
                record[key] = changes[key]
        old_kernel = record.get("kernel_id")
        if kernel is not None:
            model = await self._gateway_kernel(here.backend, kernel, record, True)
            record["kernel_id"] = model["id"]
            if await self.held.get(here.own_id) is None:  # deleted while the kernel started
                await self.held.settle(str(model["id"]))
                await self._end_kernel(here.backend, str(model["id"]))
                raise gone
        await self.held.settle(str(record["kernel_id"]), record)
        if old_kernel and old_kernel != record["kernel_id"]:  # as Jupyter does
            await self._end_kernel(here.backend, str(old_kernel))
        raw = await self._held_model(here.backend, record)
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
            # The kernel first: a relay that dies between the two leaves a record whose
            # kernel is gone (dropped at the next list), never a kernel nobody knows.
            record = await self.held.get(own_id)
            if record is not None:
                await self._end_kernel(backend, str(record["kernel_id"]))
            await self.held.drop(own_id)
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
