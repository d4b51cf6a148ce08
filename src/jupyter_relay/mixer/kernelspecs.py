"""The mixer's kernelspecs: one list, each spec's owner."""

from __future__ import annotations

import contextlib

from ..backends import Backend
from ..errors import (
    BackendError,
    NotFound,
)
from . import names
from .fanout import Fanout, Result


class Kernelspecs(Fanout):
    """Kernelspecs: the merged list, and which backend owns a mixed name."""

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
