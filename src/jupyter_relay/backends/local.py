"""The `local` kind: a Jupyter server the relay starts, serves, and stops.

The child listens on a free loopback port chosen by the kernel (`--port=0`)
and read back from its runtime file, so there is no race for the port. Its
token is random and passed in the environment, not on the command line where
`ps` would show it. It runs in its own session (a Ctrl-C in the terminal
reaches the relay, which then stops it in order) and is told by the kernel to
terminate if the relay dies (`PR_SET_PDEATHSIG`), so it never outlives us.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yarl import URL

from ..children import die_with_parent, log_tail, stop_process
from ..credentials import Secret
from ..errors import BackendStartError
from .base import HttpBackend, Progress

STOP_GRACE = 10.0


def _child_env(token: str, runtime_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_RELAY_")}
    env["JUPYTER_TOKEN"] = token
    env["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    env.pop("JUPYTER_PORT", None)
    return env


class LocalBackend(HttpBackend):
    kind = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: asyncio.subprocess.Process | None = None
        self._workdir: Path | None = None
        self._token = ""
        self._keep_log = False
        self.log_path: Path | None = None

    async def start(self, progress: Progress) -> None:
        if importlib.util.find_spec("jupyter_server") is None:
            raise BackendStartError(
                self.name,
                "the local backend needs jupyter_server in the relay's environment: "
                "pip install 'jupyter-relay[local]' (or use --backend NAME=http://...)",
            )
        started = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="jupyter-relay-"))
        runtime = self._workdir / "runtime"
        runtime.mkdir(mode=0o700)
        self.log_path = self._workdir / "jupyter-server.log"
        self._token = secrets.token_hex(24)
        root = self.spec.root_dir or Path.cwd()
        progress(f"backend '{self.name}': starting a local Jupyter server in {root} ...")
        cmd = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
        ]
        if os.geteuid() == 0:
            # Jupyter refuses root unless told; the user already chose to run the relay as root.
            cmd.append("--ServerApp.allow_root=True")
            progress(f"backend '{self.name}': running as root, so the local server is too")
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(self._token, runtime),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        info = await self._wait_for_runtime_file(runtime, started)
        # As the server has it: jupyter_server routes on raw paths (`/a%40b/`).
        base = URL(f"http://127.0.0.1:{int(info['port'])}").with_path(
            str(info.get("base_url") or "/"), encoded=True
        )
        self._open(base, Secret(self._token))
        while True:
            health = await self.check()
            if health.reachable:
                break
            self._check_alive()
            if time.monotonic() - started > self.timeouts.start:
                raise self._start_error(
                    f"did not answer within {self.timeouts.start:.0f} s ({health.error})"
                )
            await asyncio.sleep(0.1)
        progress(
            f"backend '{self.name}': local Jupyter server ready in "
            f"{time.monotonic() - started:.1f} s (log: {self.log_path})"
        )

    async def _wait_for_runtime_file(self, runtime: Path, started: float) -> dict[str, Any]:
        assert self._proc is not None
        path = runtime / f"jpserver-{self._proc.pid}.json"
        while True:
            self._check_alive()
            if path.exists():
                try:
                    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                    return data
                except (OSError, ValueError):
                    pass  # being written; read it again
            if time.monotonic() - started > self.timeouts.start:
                raise self._start_error(f"did not start within {self.timeouts.start:.0f} s")
            await asyncio.sleep(0.05)

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise self._start_error(f"exited with status {self._proc.returncode}")

    def _start_error(self, what: str) -> BackendStartError:
        self._keep_log = True
        tail = self._log_tail()
        detail = f"; last lines:\n{tail}" if tail else ""
        return BackendStartError(
            self.name,
            f"the local Jupyter server {what}; see its log {self.log_path}{detail}",
        )

    def _log_tail(self, lines: int = 8) -> str:
        return log_tail(self.log_path, lines, hide=(self._token,))

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, STOP_GRACE)
        await super().stop()
        if self._workdir is not None:
            # After a failed start the log is named in the error: keep it.
            target = self._workdir / "runtime" if self._keep_log else self._workdir
            shutil.rmtree(target, ignore_errors=True)
            self._workdir = None

    def public_url(self) -> str:
        up = self._upstream
        return str(up.base_url) if up is not None else "local (not started)"
