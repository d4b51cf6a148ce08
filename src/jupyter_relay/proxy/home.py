"""Where `/proxy/<port>/` leads: the machine where the primary's kernels run. Pure.

On a Jupyter server, `/proxy/<port>/` is a port of the server's own machine,
and tools in the kernel build their links that way (Dask's dashboard link,
TensorBoard and Bokeh helpers, jupyter-server-proxy launchers). Through the
relay the same link must reach the same machine, so it depends on the primary:

    local, none (gateways only),
    jupyter at a loopback address     this machine
    ssh                               the remote machine's loopback, over SSH
    jupyter elsewhere, hub            the backend's own port proxy, as a path
                                      (`/user/<name>/proxy/<port>/` on a hub)

`/proxy/localhost:<port>/` always means this machine, `/proxy/<backend>:<port>/`
that backend's machine.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum


class Leads(Enum):
    HERE = "this machine"
    SSH = "the ssh backend's machine"
    BACKEND = "the backend's own port proxy"


@dataclass(frozen=True)
class PortHome:
    leads: Leads
    backend: str | None  # the primary, for SSH and BACKEND

    def describe(self) -> str:
        """For the status page and the start-up lines."""
        if self.leads is Leads.SSH:
            return (
                f"the ports of backend '{self.backend}' (its machine's localhost, over SSH); "
                "this machine's ports: /proxy/localhost:<port>/"
            )
        if self.leads is Leads.BACKEND:
            return (
                f"the port proxy of backend '{self.backend}' (jupyter-server-proxy there); "
                "this machine's ports: /proxy/localhost:<port>/"
            )
        return "ports of this machine"


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def port_home(kind: str | None, name: str | None, host: str | None) -> PortHome:
    """Where `/proxy/<port>/` leads with a primary of `kind` named `name` at URL `host`."""
    if kind == "ssh":
        return PortHome(Leads.SSH, name)
    if kind == "hub" or (kind == "jupyter" and not is_loopback_host(host)):
        return PortHome(Leads.BACKEND, name)
    return PortHome(Leads.HERE, None)
