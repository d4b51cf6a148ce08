"""The relay's server-info file, so `jupyter server list` and IDEs find it.

While it runs, a Jupyter server writes `jpserver-<pid>.json` to Jupyter's runtime
directory and removes it on exit; `jupyter server list` (jupyter_server's
`list_running_servers`) lists every such file whose pid is alive. The relay
writes the same file, with the same fields as jupyter_server's
`ServerApp.server_info`, so whatever lists running servers lists it too. The
file holds the token, so it is written as jupyter_server writes it: mode 0600,
with jupyter_core's `secure_write`. (jupyter_server's `jpserver-<pid>-open.html`,
a page that logs a browser in, is not written: the printed URL does that.)

`server_info` is pure; `write` and `remove` do the I/O.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir, secure_write


def server_info(
    *,
    url: str,
    ip: str,
    port: int,
    sock: str,
    secure: bool,
    token: str,
    root_dir: str,
    pid: int,
    version: str,
) -> dict[str, Any]:
    """The file's content, in the shape of jupyter_server's `ServerApp.server_info`.

    `url` is the relay's base URL without the token (`http://127.0.0.1:8765/`, or
    `http+unix://%2Fpath%2Fto.sock/`); `token` is "" when the relay has none.
    """
    return {
        "base_url": "/",
        "hostname": ip or "localhost",
        "password": False,
        "pid": pid,
        "port": port,
        "root_dir": root_dir,
        "secure": secure,
        "sock": sock,
        "token": token,
        "url": url,
        "version": version,
    }


def info_path(runtime_dir: Path, pid: int) -> Path:
    return runtime_dir / f"jpserver-{pid}.json"


def write(info: dict[str, Any], runtime_dir: Path | None = None) -> Path:
    """Write `info` to `jpserver-<pid>.json` in the runtime directory (mode 0600).

    Raises OSError when the directory cannot be made or the file written.
    """
    directory = runtime_dir if runtime_dir is not None else Path(jupyter_runtime_dir())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = info_path(directory, int(info["pid"]))
    with secure_write(os.fspath(path)) as out:
        json.dump(info, out, indent=2, sort_keys=True)
    return path


def remove(path: Path) -> None:
    """Remove the file written by `write`; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
