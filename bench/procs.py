"""Child processes: started to die with the benchmark, stopped in reverse order, measured.

Every server the benchmark starts is a `Child`: its output goes to files in
the run's work directory (shown when it fails to start), the kernel is asked
to SIGTERM it if the benchmark dies (so a killed run leaves nothing behind),
and its resident memory can be read for itself and its descendants.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    """A port free on 127.0.0.1 now (for servers that cannot be told to pick one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StartError(RuntimeError):
    """A child did not start; the message carries the end of its log."""


@dataclass
class Child:
    """One server process the benchmark started."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 15) -> str:
        text = ""
        for path in (self.out, self.log):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why: str) -> StartError:
        return StartError(f"{self.name}: {why}\n--- its log ({self.log}):\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise self.fail(f"exited with status {self.proc.returncode}")

    def wait_output(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until the child prints a line matching `pattern` on stdout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.out.read_text(errors="replace"))
            if match:
                return match
            self.check_alive()
            time.sleep(0.05)
        raise self.fail(f"printed nothing matching {pattern!r} in {timeout:.0f} s")

    def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            self.check_alive()
            time.sleep(0.05)
        raise self.fail(f"does not listen on 127.0.0.1:{port} after {timeout:.0f} s")

    def processes(self) -> list[psutil.Process]:
        """The child and its descendants (nginx's worker, a server's kernels)."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self, tree: bool = True) -> int:
        """Resident memory in bytes, of the child alone or with its descendants."""
        total = 0
        for proc in self.processes() if tree else self.processes()[:1]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Processes:
    """Every child of a run; `stop_all` stops them newest first."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        out = self.workdir / f"{name}.out"
        log = self.workdir / f"{name}.log"
        child_env = {**self.env, **(env or {})}
        with out.open("wb") as stdout, log.open("wb") as stderr:
            proc = subprocess.Popen(
                list(cmd),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, out, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        while self.children:
            child = self.children.pop()
            with contextlib.suppress(Exception):
                child.stop()


def base_env() -> dict[str, str]:
    """The environment for children: ours, less anything that configures Jupyter or the relay."""
    drop = ("JUPYTER_RELAY_", "JUPYTER_TOKEN", "JUPYTER_CONFIG", "JUPYTER_RUNTIME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}
