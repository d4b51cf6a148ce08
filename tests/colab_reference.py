"""The reference: Google's `jupyter_http_over_ws` extension on a classic Notebook 6 server.

The extension imports `notebook.base` and `distutils`, so it runs only on Notebook 6 and a
Python that still has distutils (3.11). It lives in a virtual environment of its own, never
in the project's: `.venv-colab-ref` in the checkout (or `$RELAY_COLAB_REF_VENV`), made with
the project's Python 3.11 if missing and reused when present:

    python3.11 -m venv .venv-colab-ref
    .venv-colab-ref/bin/pip install "notebook<7" jupyter-http-over-ws ipykernel

Each server gets a private JUPYTER_CONFIG_DIR in which `jupyter serverextension enable
--py jupyter_http_over_ws` turns the extension on, a private runtime and data directory,
and is started as Colab's instructions say:

    jupyter notebook --no-browser --port=P --ip=127.0.0.1 --NotebookApp.token=T \
        --NotebookApp.allow_origin=https://colab.research.google.com --allow-root \
        --notebook-dir=DIR
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .servers import free_port, stop_process, wait_http
from .waiting import eventually_sync

COLAB_ORIGIN = "https://colab.research.google.com"
REF_VENV = Path(
    os.environ.get(
        "RELAY_COLAB_REF_VENV", Path(__file__).resolve().parent.parent / ".venv-colab-ref"
    )
)
REF_PACKAGES = ("notebook<7", "jupyter-http-over-ws", "ipykernel")
# What the venv must be able to import for the reference to run.
REF_IMPORTS = "import notebook, jupyter_http_over_ws, ipykernel, distutils"
START_TIMEOUT = 60.0


def _python311() -> str:
    """A Python 3.11 to make the venv with: this one if it is 3.11, else python3.11."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if found is None:
        raise RuntimeError("the reference needs Python 3.11 (distutils), and none was found")
    return found


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}"
            f"\n{done.stderr[-3000:]}"
        )
    return done.stdout + done.stderr


def ensure_venv(venv: Path = REF_VENV) -> Path:
    """The reference's venv, made and filled if it cannot import the reference yet."""
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", REF_IMPORTS],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check.returncode == 0:
            return venv
    else:
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([_python311(), "-m", "venv", str(venv)])
    _run([str(python), "-m", "pip", "install", "--quiet", *REF_PACKAGES])
    _run([str(python), "-c", REF_IMPORTS])
    return venv


def _env(extra: dict[str, str]) -> dict[str, str]:
    """The child's environment: none of the relay's or the project venv's variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "VIRTUAL_ENV", "PYTHON", "IPYTHON"))
    }
    env.update(extra)
    return env


@dataclass
class ReferenceServer:
    """A running `jupyter notebook` with the extension enabled."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str
    root: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def auth_url(self) -> str:
        """What Colab passes as `jupyter_http_over_ws_auth_url`: the URL with the token."""
        return f"{self.base}?token={self.token}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        stop_process(self.proc)


def start_reference(root: Path, workdir: Path, venv: Path = REF_VENV) -> ReferenceServer:
    """Start the reference on a free loopback port, serving `root`; wait until it answers."""
    ensure_venv(venv)
    bin_dir = venv / "bin"
    tag = secrets.token_hex(4)
    config_dir = workdir / f"ref-config-{tag}"
    runtime_dir = workdir / f"ref-runtime-{tag}"
    data_dir = workdir / f"ref-data-{tag}"
    for path in (config_dir, runtime_dir, data_dir):
        path.mkdir(parents=True)
    env = _env(
        {
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_RUNTIME_DIR": str(runtime_dir),
            "JUPYTER_DATA_DIR": str(data_dir),
            "IPYTHONDIR": str(workdir / f"ref-ipython-{tag}"),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # The extension announces itself with print(): unbuffered, it is in the log at once.
            "PYTHONUNBUFFERED": "1",
        }
    )
    enabled = _run(
        [str(bin_dir / "jupyter"), "serverextension", "enable", "--py", "jupyter_http_over_ws"],
        env,
    )
    if "OK" not in enabled:
        raise RuntimeError(f"the extension was not enabled: {enabled}")
    token = secrets.token_hex(16)
    log = workdir / f"reference-{tag}.log"
    for _ in range(5):  # Notebook 6 has no port 0: pick one, retry if it was taken meanwhile
        port = free_port()
        cmd = [
            str(bin_dir / "jupyter"),
            "notebook",
            "--no-browser",
            f"--port={port}",
            "--NotebookApp.port_retries=0",
            "--ip=127.0.0.1",
            f"--NotebookApp.token={token}",
            f"--NotebookApp.allow_origin={COLAB_ORIGIN}",
            "--allow-root",
            f"--notebook-dir={root}",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        server = ReferenceServer(proc, port, token, root, log)
        try:
            wait_http(
                f"{server.base}api/status",
                {"Authorization": f"token {token}"},
                timeout=START_TIMEOUT,
                proc=proc,
            )
        except RuntimeError as exc:
            server.stop()
            if "already in use" in server.logs():
                continue
            raise RuntimeError(f"the reference did not start: {server.logs()}") from exc
        loaded = functools.partial(_extension_loaded, server)
        try:
            eventually_sync(
                loaded,
                timeout=10,
                what="the log says the extension is initialized",
            )
        except AssertionError as exc:
            server.stop()
            raise RuntimeError(f"the extension did not load: {server.logs()}") from exc
        return server
    raise RuntimeError("no free port for the reference")


def _extension_loaded(server: ReferenceServer) -> bool:
    return "jupyter_http_over_ws extension initialized" in server.logs()
