"""The backends every path forwards to, started once per run.

- `web`: nginx, `return 200` with ~100 bytes of JSON (small HTTP; nginx
  answers >200k req/s here, far beyond any proxy, so it is never the
  bottleneck) and a static 1 GiB file by sendfile (the download).
- `node`: `backend.mjs`, a websocket echo (node `ws`) and an upload sink that
  reads and discards the body and answers its length (so an upload is timed
  until the backend has every byte).
- `jupyter`: a real `jupyter server` with ipykernel and JupyterLab (kernel
  round trips, idle kernel websockets, the JupyterLab page).

A second `jupyter server` hosts jupyter-server-proxy (the `jsp` path); it is
started here because it starts as slowly as the backend, and in parallel.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import nginx
from .procs import Child, Processes, StartError, free_port

BENCH_DIR = Path(__file__).resolve().parent
NODE_MODULES = BENCH_DIR / "node_modules"
WEB, NODE, JUPYTER = "web", "node", "jupyter"
BACKENDS = (WEB, NODE, JUPYTER)


@dataclass(frozen=True)
class Backends:
    """Where each backend listens, and the processes behind them."""

    ports: dict[str, int]
    children: dict[str, Child]
    jsp_port: int
    jsp_child: Child
    token: str
    big_file: Path

    def base(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.ports[backend]}/"

    @property
    def jupyter_root(self) -> Path:
        """The Jupyter backend's root directory (what `/files/` serves)."""
        return jupyter_home(self.children[JUPYTER]) / "root"

    @property
    def jupyter_runtime_file(self) -> Path:
        """The Jupyter backend's `jpserver-<pid>.json` (what `jupyter server list` reads)."""
        child = self.children[JUPYTER]
        return jupyter_home(child) / "runtime" / f"jpserver-{child.pid}.json"


def _spawn_nginx_backend(procs: Processes, download_bytes: int) -> tuple[Child, int, Path]:
    workdir = procs.workdir / "nginx-backend"
    www = workdir / "www"
    www.mkdir(parents=True)
    # Sparse: no disk written, and the page cache serves zeros at memory speed.
    with (www / nginx.BIG_PATH).open("wb") as big:
        big.truncate(download_bytes)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx.backend_config(workdir, port, www))
    cmd = ["nginx", "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    return procs.spawn("backend-nginx", cmd), port, www / nginx.BIG_PATH


def _spawn_node_backend(procs: Processes) -> Child:
    return procs.spawn("backend-node", ["node", str(BENCH_DIR / "backend.mjs")], cwd=BENCH_DIR)


def jupyter_home(child: Child) -> Path:
    """Where a `jupyter server` of spawn_jupyter keeps its root, runtime files and state."""
    return child.log.parent / child.name


def spawn_jupyter(procs: Processes, name: str, token: str) -> Child:
    """A `jupyter server` on a free loopback port, its state kept in the work directory."""
    home = procs.workdir / name
    root = home / "root"
    root.mkdir(parents=True)
    env = {
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
    ]
    return procs.spawn(name, cmd, env=env)


def wait_jupyter(child: Child, token: str, timeout: float = 90.0) -> int:
    """Wait until the server wrote its port and answers `/api/status`; return the port."""
    info = jupyter_home(child) / "runtime" / f"jpserver-{child.pid}.json"
    deadline = time.monotonic() + timeout
    port = 0
    while not port:
        child.check_alive()
        if time.monotonic() > deadline:
            raise child.fail(f"wrote no {info.name} in {timeout:.0f} s")
        try:
            port = int(json.loads(info.read_text())["port"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    while True:
        child.check_alive()
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback http
                if resp.status == 200:
                    return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise child.fail(f"{url} did not answer in {timeout:.0f} s")
        time.sleep(0.1)


def start_backends(procs: Processes, token: str, download_bytes: int) -> Backends:
    """Start the three backends and the jupyter-server-proxy host, in parallel."""
    nginx_child, nginx_port, big_file = _spawn_nginx_backend(procs, download_bytes)
    node_child = _spawn_node_backend(procs)
    jupyter = spawn_jupyter(procs, "backend-jupyter", token)
    jsp = spawn_jupyter(procs, "jupyter-server-proxy", token)
    nginx_child.wait_listening(nginx_port)
    node_port = int(node_child.wait_output(r"^(\d+)$").group(1))
    jupyter_port = wait_jupyter(jupyter, token)
    jsp_port = wait_jupyter(jsp, token)
    _check_jsp(jsp, jsp_port, token)
    return Backends(
        ports={WEB: nginx_port, NODE: node_port, JUPYTER: jupyter_port},
        children={WEB: nginx_child, NODE: node_child, JUPYTER: jupyter},
        jsp_port=jsp_port,
        jsp_child=jsp,
        token=token,
        big_file=big_file,
    )


def _check_jsp(child: Child, port: int, token: str) -> None:
    """jupyter-server-proxy must be loaded: `/proxy/<port>/` of the server itself answers."""
    url = f"http://127.0.0.1:{port}/proxy/127.0.0.1:{port}/api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback http
            if resp.status == 200:
                return
    except OSError as exc:
        raise child.fail(f"{url}: {exc}; is jupyter-server-proxy installed?") from exc
    raise StartError(f"{url} did not answer 200")
