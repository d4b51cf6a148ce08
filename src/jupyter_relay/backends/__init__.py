"""Backend kinds behind one `Backend` protocol, and the factory that builds them."""

from __future__ import annotations

from ..specs import BackendSpec
from .base import Backend, HealthResult, HttpBackend, Timeouts, Upstream
from .hub import HubBackend
from .jupyter import GatewayBackend, JupyterBackend
from .local import LocalBackend
from .ssh import SshBackend

__all__ = [
    "Backend",
    "GatewayBackend",
    "HealthResult",
    "HttpBackend",
    "HubBackend",
    "JupyterBackend",
    "LocalBackend",
    "SshBackend",
    "Timeouts",
    "Upstream",
    "build_backend",
]


def build_backend(spec: BackendSpec, timeouts: Timeouts) -> Backend:
    """Make the backend object for a spec; the spec's kind was validated already."""
    if spec.kind == "local":
        return LocalBackend(spec, timeouts)
    if spec.kind == "hub":
        return HubBackend(spec, timeouts)
    if spec.kind == "ssh":
        return SshBackend(spec, timeouts)
    if spec.kind == "gateway":
        return GatewayBackend(spec, timeouts)
    return JupyterBackend(spec, timeouts)
