"""The mixer's kernels: one list, each kernel's owner, starting and ending them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import (
    BackendError,
    BackendTimeout,
    NotFound,
)
from . import names, start_env
from .api import Answer, call, error_body
from .fanout import ListingRefused, Result
from .kernelspecs import Kernelspecs


class Kernels(Kernelspecs):
    """Kernels: the merged list, starting, acting on and ending them, each one's owner."""

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
        answer = await self._start(backend, "POST", "api/kernels", model)
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

    async def _start(self, backend: str, method: str, path: str, body: dict[str, Any]) -> Answer:
        """A request that may start a kernel, bounded by --kernel-start-timeout.

        A kernel start on a gateway carries the `env` GatewayClient sends (start_env.py),
        and a refusal of it says what to change. Only this request waits that long: every
        other goes on meanwhile.
        """
        if self._holds(backend) and path == "api/kernels":
            body = start_env.start_body(body, self.start_env)
        limit = self.kernel_start_timeout
        try:
            async with asyncio.timeout(limit):
                # The call's own bound is the outer one's, so the outer one says why.
                answer = await call(
                    self.backends[backend], method, path, timeout=limit + 1, body=body
                )
        except TimeoutError:
            raise BackendTimeout(
                backend,
                f"backend '{backend}' did not start the kernel within {limit:g} s; "
                "a start that needs longer (an image to pull, a busy cluster) needs a "
                "larger --kernel-start-timeout",
                "kernel start timed out",
            ) from None
        if answer.status == 403 and self._holds(backend) and path == "api/kernels":
            error = error_body(backend, answer)
            return Answer(403, start_env.refusal(error, start_env.sent_user(body)))
        return answer

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
