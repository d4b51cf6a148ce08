"""Sessions of kernels that run on gateways, kept by the relay in a small file.

A Kernel Gateway serves kernels, not sessions: its session API stores a path
and a kernel id, drops `name` and `type`, and cannot bind an existing kernel.
So, as Jupyter's own GatewayClient does, the relay keeps those sessions
itself. It saves them (id, path, name, type, kernel id, and the gateway's
URL) in a JSON file, so a restarted relay, or a second one using the same
file, knows them again; the kernels themselves keep running on the gateway.
The file holds no secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("jupyter_relay.mixer")

FILE_NAME = "jupyter-relay-sessions.json"
FIELDS = ("id", "backend", "url", "path", "name", "type", "kernel_id")

Record = dict[str, Any]


def default_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Jupyter's runtime directory, as `jupyter --runtime-dir` prints it."""
    if env.get("JUPYTER_RUNTIME_DIR"):
        return Path(env["JUPYTER_RUNTIME_DIR"])
    if env.get("JUPYTER_DATA_DIR"):
        return Path(env["JUPYTER_DATA_DIR"]) / "runtime"
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Jupyter" / "runtime"
    data = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data) / "jupyter" / "runtime"


class HeldSessions:
    """The records, by client session id; every change is written at once."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / FILE_NAME if directory is not None else None
        self.records: dict[str, Record] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again (another relay may have changed it)."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            records = [r for r in data.get("sessions", []) if isinstance(r, dict)]
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot read %s (%s); starting without its sessions", self.path, exc)
            return
        self.records = {str(r["id"]): {k: r.get(k) for k in FIELDS} for r in records if r.get("id")}

    def of(self, backend: str, url: str) -> list[Record]:
        return [r for r in self.records.values() if r["backend"] == backend and r["url"] == url]

    def get(self, session_id: str) -> Record | None:
        return self.records.get(session_id)

    def put(self, record: Record) -> None:
        self.records[str(record["id"])] = {k: record.get(k) for k in FIELDS}
        self._save()

    def drop(self, session_id: str) -> None:
        if self.records.pop(session_id, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        body = json.dumps({"sessions": list(self.records.values())}, indent=1)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".jupyter-relay-", dir=self.path.parent)
            with os.fdopen(fd, "w") as out:
                out.write(body)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save gateway sessions to %s: %s", self.path, exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)


def model(record: Record, kernel: dict[str, Any]) -> dict[str, Any]:
    """A held session in Jupyter's session shape (kernel as the gateway sent it)."""
    return {
        "id": record["id"],
        "path": record["path"],
        "name": record["name"],
        "type": record["type"],
        "kernel": kernel,
        "notebook": {"path": record["path"], "name": record["name"]},
    }
