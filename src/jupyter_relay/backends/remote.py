"""Finding the Jupyter on a remote machine: commands to run there and reading their output.

Pure logic for the `ssh` backend: which command lists the running servers,
how to start one that outlives the SSH session, how to pick a server from the
list, and what to tell the user when there is none.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

NOT_FOUND_STATUS = 127  # the shell's "command not found"


@dataclass(frozen=True)
class RemoteServer:
    """One running Jupyter server, as `jupyter server list --json` describes it."""

    port: int
    host: str  # where it listens, as seen from the remote machine
    base_url: str  # starts and ends with /
    token: str
    secure: bool
    root_dir: str
    pid: int | None

    def describe(self) -> str:
        pid = f", pid {self.pid}" if self.pid else ""
        base = self.base_url if self.base_url != "/" else ""
        return f"port {self.port}{base} ({self.root_dir}{pid})"


def list_command(jupyter: str, app: str = "server") -> str:
    return f"{shlex.quote(jupyter)} {app} list --json"


def start_command(jupyter: str, log: str) -> str:
    """Start a Jupyter server that survives the SSH session, logging to `log`; print its pid.

    As root it needs --allow-root, as the local backend does.
    """
    q = shlex.quote
    directory = log.rpartition("/")[0] or "."
    return (
        f"cd || exit 1; mkdir -p {q(directory)} || exit 1; "
        'root=; [ "$(id -u)" = 0 ] && root=--allow-root; '
        f"nohup setsid {q(jupyter)} server --no-browser --port=0 --ServerApp.ip=127.0.0.1 "
        f"$root > {q(log)} 2>&1 < /dev/null & echo $!"
    )


def far_side_command(jupyter: str, program: str) -> str:
    """Run `program` with the Python next to `jupyter` (else the first on PATH), in a POSIX shell.

    Exits 127 with a line on stderr when there is no Python at all.
    """
    q = shlex.quote
    return (
        f"j=$(command -v {q(jupyter)} 2>/dev/null); d=${{j%/*}}; "
        'for p in "$d/python3" "$d/python" python3 python; do '
        'if command -v "$p" >/dev/null 2>&1; then '
        f'exec "$p" -u -c {q(program)}; fi; done; '
        "echo 'no python3 on the PATH of the login shell' >&2; exit 127"
    )


def alive_command(pid: int) -> str:
    return f"kill -0 {int(pid)}"


def parse_list(output: str) -> list[RemoteServer]:
    """Servers from `jupyter server list --json` (one JSON object a line; a list also read)."""
    servers = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith(("{", "[")):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        for item in data if isinstance(data, list) else [data]:
            server = _server(item)
            if server is not None:
                servers.append(server)
    return servers


def _server(item: Any) -> RemoteServer | None:
    if not isinstance(item, dict) or not isinstance(item.get("port"), int):
        return None
    host = str(item.get("hostname") or "127.0.0.1")
    if host in ("0.0.0.0", "::", "*", ""):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    base = str(item.get("base_url") or "/")
    base = "/" + base.strip("/") + "/" if base.strip("/") else "/"
    pid = item.get("pid")
    return RemoteServer(
        port=item["port"],
        host=host,
        base_url=base,
        token=str(item.get("token") or ""),
        secure=bool(item.get("secure")),
        root_dir=str(item.get("root_dir") or item.get("notebook_dir") or "?"),
        pid=pid if isinstance(pid, int) else None,
    )


def pick(servers: list[RemoteServer], port: int | None) -> RemoteServer | None:
    """The server on `port`, or the first listed when no port is asked for."""
    if port is not None:
        return next((s for s in servers if s.port == port), None)
    return servers[0] if servers else None


def log_path(backend: str) -> str:
    return f".jupyter-relay/{backend}.log"


def none_running(where: str, port: int | None) -> str:
    if port is not None:
        return (
            f"no Jupyter server on port {port} is listed on {where}; "
            "check ?jupyter_port=, or drop it to use the one running there"
        )
    return (
        f"no Jupyter server runs on {where}; start one there "
        "(jupyter server --no-browser), or add ?start=true to let the relay start it"
    )


def no_jupyter(where: str, jupyter: str) -> str:
    return (
        f"there is no {jupyter!r} on {where} (not on the PATH of its login shell); "
        "install Jupyter there, or give its path: ?jupyter=/path/to/bin/jupyter"
    )
