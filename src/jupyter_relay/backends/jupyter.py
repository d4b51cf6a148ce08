"""The `jupyter` kind: a Jupyter server already running at a URL."""

from __future__ import annotations

from .base import HttpBackend, Progress


class JupyterBackend(HttpBackend):
    kind = "jupyter"

    async def start(self, progress: Progress) -> None:
        assert self.spec.url is not None
        self._open(self.spec.url, self.spec.token.read())
        health = await self.check()
        if health.reachable:
            progress(
                f"backend '{self.name}': {self.public_url()} answers ({health.latency_ms:.0f} ms)"
            )
        # Down is not fatal: the server may come up later, requests say why meanwhile, and
        # the relay's announcement says it with the other backends' states.


class GatewayBackend(JupyterBackend):
    """The `gateway` kind: a Kernel Gateway or Enterprise Gateway, kernels only.

    It has no `/api/status` (the Kernel Gateway answers `/api` without asking
    for the token), so the health check lists kernelspecs, which needs it.
    """

    kind = "gateway"
    check_path = "api/kernelspecs"
