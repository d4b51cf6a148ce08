"""Real parts for the tests: Jupyter servers and relay processes on loopback."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .waiting import eventually_sync

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_RELAY_", "JUPYTER_TOKEN"))
    }
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class JupyterServer:
    """A real `jupyter server` child with ipykernel, on a free loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    root: Path
    log: Path
    scheme: str = "http"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    @property
    def backend_arg(self) -> str:
        return f"{self.base}?token={self.token}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        stop_process(self.proc)


def start_jupyter(
    root: Path,
    workdir: Path,
    *,
    extra_args: tuple[str, ...] = (),
    scheme: str = "http",
    wait_ready: bool = True,
    env_extra: dict[str, str] | None = None,
    module: str = "jupyter_server",
    runtime_dir: Path | None = None,
) -> JupyterServer:
    """Start `python -m <module>` (a Jupyter server app) with its own token and state.

    Its runtime file goes to `runtime_dir` if given (where `jupyter server list`
    is to find it), else to a directory of its own.
    """
    token = secrets.token_hex(16)
    runtime = runtime_dir or workdir / f"runtime-{secrets.token_hex(4)}"
    runtime.mkdir(parents=True, exist_ok=True)
    log = workdir / f"jupyter-{secrets.token_hex(4)}.log"
    # JupyterLab keeps layouts and settings per user: give each server its own.
    lab_state = workdir / f"lab-{secrets.token_hex(4)}"
    env = _child_env(
        {
            "JUPYTER_TOKEN": token,
            "JUPYTER_RUNTIME_DIR": str(runtime),
            "JUPYTERLAB_WORKSPACES_DIR": str(lab_state / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(lab_state / "settings"),
            **(env_extra or {}),
        }
    )
    cmd = [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        *extra_args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
    info_path = runtime / f"jpserver-{proc.pid}.json"

    def its_port() -> int | None:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited: {log.read_text()[-2000:]}")
        if not info_path.exists():
            return None
        return int(json.loads(info_path.read_text())["port"])  # a file half written: again

    try:
        port = eventually_sync(
            its_port,
            timeout=60,
            what=f"{info_path} names the port",
            ignoring=(ValueError, KeyError),
        )
    except AssertionError as exc:
        proc.kill()
        raise RuntimeError(f"jupyter server did not start: {exc}") from exc
    server = JupyterServer(proc, port, token, root, log, scheme)
    if wait_ready and scheme == "http":
        wait_http(f"{server.base}api/status", {"Authorization": f"token {token}"})
    return server


@dataclass
class KernelGateway:
    """A real Jupyter Kernel Gateway (`jupyter kernelgateway`) on a free loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def backend_arg(self) -> str:
        return f"gateway+{self.base}?token={self.token}"

    def stop(self) -> None:
        stop_process(self.proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_kernel_gateway(
    workdir: Path, *, list_kernels: bool = True, env_extra: dict[str, str] | None = None
) -> KernelGateway:
    """Start `jupyter kernelgateway` with a token; KG_LIST_KERNELS as asked."""
    token = secrets.token_hex(16)
    log = workdir / f"kernelgateway-{secrets.token_hex(4)}.log"
    runtime = workdir / f"runtime-{secrets.token_hex(4)}"
    runtime.mkdir(parents=True)
    env = _child_env(
        {
            "KG_LIST_KERNELS": "True" if list_kernels else "False",
            "JUPYTER_RUNTIME_DIR": str(runtime),
            **(env_extra or {}),
        }
    )
    for _ in range(5):  # the gateway has no port 0: pick one, retry if taken meanwhile
        port = free_port()
        cmd = [
            str(BIN / "jupyter-kernelgateway"),
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
            "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.auth_token={token}",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        gateway = KernelGateway(proc, port, token, log)
        try:
            wait_http(
                f"{gateway.base}api/kernelspecs",
                {"Authorization": f"token {token}"},
                timeout=60,
                proc=proc,
            )
        except RuntimeError as exc:
            gateway.stop()
            if "in use" in log.read_text():
                continue
            raise RuntimeError(f"kernel gateway did not start: {log.read_text()[-2000:]}") from exc
        return gateway
    raise RuntimeError("no free port for the kernel gateway")


def unread_requests(port: int) -> int:
    """Open connections to 127.0.0.1:`port` holding bytes its server has not read.

    Linux's /proc/net/tcp lists each socket with its receive queue: for a server that is
    stopped (SIGSTOP), a request that has reached it is exactly such a connection.
    """
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        established, unread = state == "01", int(queues.split(":")[1], 16) > 0
        if int(local.rsplit(":", 1)[1], 16) == port and established and unread:
            count += 1
    return count


def wait_http(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bool(resp.status == 200)

    try:
        eventually_sync(
            answers,
            timeout=timeout,
            interval=0.1,
            what=f"{url} answers 200",
            ignoring=(OSError, http.client.HTTPException),
        )
    except AssertionError as exc:
        raise RuntimeError(str(exc)) from exc


URL_RE = re.compile(r"((?:https?|http\+unix)://\S+)")


@dataclass
class RelayProcess:
    """The `jupyter-relay` command as a user runs it."""

    proc: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path
    token: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.token = self.url.partition("?token=")[2]
        port = re.search(r"://[^/]*:(\d+)/", self.url)  # none on a Unix socket
        self.port = int(port.group(1)) if port else 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode


def start_relay_process(
    args: list[str],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    cwd: Path | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> RelayProcess:
    """The command with `args`; `wrap` may put it inside another (e.g. `unshare`)."""
    tag = secrets.token_hex(4)
    stdout = workdir / f"relay-{tag}.out"
    stderr = workdir / f"relay-{tag}.err"
    command = [str(BIN / "jupyter-relay"), *args]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            wrap(command) if wrap else command,
            stdout=out,
            stderr=err,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )

    def printed_url() -> re.Match[str] | None:
        match = URL_RE.search(stdout.read_text())
        if match is None and proc.poll() is not None:
            raise RuntimeError(f"jupyter-relay exited {proc.returncode}: {stderr.read_text()}")
        return match

    try:
        match = eventually_sync(printed_url, timeout=timeout, what="jupyter-relay prints its URL")
    except AssertionError as exc:
        proc.kill()
        raise RuntimeError(f"jupyter-relay printed no URL: {stderr.read_text()}") from exc
    return RelayProcess(proc, match.group(1), stdout, stderr)
