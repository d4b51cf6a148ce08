"""The paths a client takes to the same backends: direct, or through one proxy.

Each path has a base URL per backend and, for a proxy, the process serving
that backend (whose memory the scenarios measure):

- `direct`: the backend itself, the physical limit;
- `relay`: the `jupyter-relay` command as a user runs it, one per backend
  (today a relay sends every path to its primary backend);
- `chp`: configurable-http-proxy from npm, one per backend (`--default-target`);
- `portproxy`: the same relays' port proxy, `/proxy/<port>/` (the relay's answer to jsp);
- `jsp`: jupyter-server-proxy from PyPI, `/proxy/127.0.0.1:<port>/` of a Jupyter server;
- `nginx`: Debian's nginx, one process with a server block per backend;
- `ssh_l`: OpenSSH's `ssh -N -L` port forwards to a Jupyter behind sshd, what
  users do today; only the `ssh` scenario has it (bench/ssh.py starts it, and
  there `relay` is a relay with an `ssh://` backend).

Every path takes the same credentials, `Authorization: token T`: the relay,
both Jupyter servers and so jupyter-server-proxy share the run's token, and
the other proxies pass the header through.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import nginx
from .backends import BACKENDS, JUPYTER, NODE_MODULES, Backends
from .procs import Child, Processes, free_port

DIRECT, RELAY, CHP, JSP, NGINX = "direct", "relay", "chp", "jsp", "nginx"
PORTPROXY, SSH_L = "portproxy", "ssh_l"
# The paths start_paths starts for every scenario; and every path a scenario may take.
RUN_PATHS = (DIRECT, RELAY, PORTPROXY, CHP, JSP, NGINX)
ALL_PATHS = (*RUN_PATHS, SSH_L)
LABELS = {
    DIRECT: "direct",
    RELAY: "jupyter-relay",
    PORTPROXY: "jupyter-relay /proxy/<port>/",
    CHP: "configurable-http-proxy",
    JSP: "jupyter-server-proxy",
    NGINX: "nginx",
    SSH_L: "ssh -L",
}
RELAY_BIN = Path(sys.executable).parent / "jupyter-relay"
CHP_BIN = NODE_MODULES / ".bin" / "configurable-http-proxy"


@dataclass(frozen=True)
class ProxyPath:
    """One way to reach the backends."""

    name: str
    bases: dict[str, str]
    # The proxy process serving each backend; none for `direct`.
    servers: dict[str, Child] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def url(self, backend: str, rel: str = "") -> str:
        return self.bases[backend] + rel

    def ws_url(self, backend: str, rel: str = "") -> str:
        return "ws" + self.url(backend, rel).removeprefix("http")


def _spawn_relay(procs: Processes, backends: Backends, backend: str) -> Child:
    url = backends.base(backend)
    env = {"JUPYTER_RELAY_TOKEN": backends.token}
    if backend == JUPYTER:
        # The backend's token from the environment, not the command line.
        url += "?token_env=BENCH_BACKEND_TOKEN"
        env["BENCH_BACKEND_TOKEN"] = backends.token
    cmd = [str(RELAY_BIN), "--port", "0", "--backend", f"{backend}={url}"]
    env["JUPYTER_CONFIG_DIR"] = str(procs.workdir / "relay-config")
    return procs.spawn(f"relay-{backend}", cmd, env=env)


def _spawn_chp(procs: Processes, backends: Backends, backend: str) -> tuple[Child, int]:
    port, api_port = free_port(), free_port()
    cmd = [
        str(CHP_BIN),
        "--ip=127.0.0.1",
        f"--port={port}",
        "--api-ip=127.0.0.1",
        f"--api-port={api_port}",
        f"--default-target={backends.base(backend).rstrip('/')}",
    ]
    env = {"CONFIGPROXY_AUTH_TOKEN": backends.token}
    return procs.spawn(f"chp-{backend}", cmd, env=env), port


def _spawn_nginx_proxy(procs: Processes, backends: Backends) -> tuple[Child, dict[str, int]]:
    workdir = procs.workdir / "nginx-proxy"
    workdir.mkdir()
    ports = {backend: free_port() for backend in BACKENDS}
    conf = workdir / "nginx.conf"
    routes = {ports[b]: backends.ports[b] for b in BACKENDS}
    conf.write_text(nginx.proxy_config(workdir, routes))
    cmd = ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    return procs.spawn("proxy-nginx", cmd), ports


def start_paths(procs: Processes, backends: Backends) -> dict[str, ProxyPath]:
    """Start every proxy in front of `backends`; return every path, direct first."""
    relays = {b: _spawn_relay(procs, backends, b) for b in BACKENDS}
    chps = {b: _spawn_chp(procs, backends, b) for b in BACKENDS}
    nginx_child, nginx_ports = _spawn_nginx_proxy(procs, backends)

    relay_bases = {}
    for backend, child in relays.items():
        relay_bases[backend] = child.wait_output(r"(http://127\.0\.0\.1:\d+/)").group(1)
    for child, port in chps.values():
        child.wait_listening(port)
    for port in nginx_ports.values():
        nginx_child.wait_listening(port)

    jsp_base = f"http://127.0.0.1:{backends.jsp_port}/proxy/127.0.0.1:"
    paths = [
        ProxyPath(DIRECT, {b: backends.base(b) for b in BACKENDS}),
        ProxyPath(RELAY, relay_bases, relays),
        # Its backend's token is dropped on the way (the relay's credentials never reach an
        # app), so only the scenarios of token-less backends (web, node) take this path.
        ProxyPath(
            PORTPROXY,
            {b: f"{relay_bases[b]}proxy/{backends.ports[b]}/" for b in BACKENDS},
            relays,
        ),
        ProxyPath(
            CHP,
            {b: f"http://127.0.0.1:{port}/" for b, (_, port) in chps.items()},
            {b: child for b, (child, _) in chps.items()},
        ),
        ProxyPath(
            JSP,
            {b: f"{jsp_base}{backends.ports[b]}/" for b in BACKENDS},
            {b: backends.jsp_child for b in BACKENDS},
        ),
        ProxyPath(
            NGINX,
            {b: f"http://127.0.0.1:{port}/" for b, port in nginx_ports.items()},
            {b: nginx_child for b in BACKENDS},
        ),
    ]
    return {p.name: p for p in paths}
