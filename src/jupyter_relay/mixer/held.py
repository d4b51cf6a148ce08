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
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

log = logging.getLogger("jupyter_relay.mixer")

FILE_NAME = "jupyter-relay-sessions.json"
LOCK_NAME = ".jupyter-relay-sessions.lock"
FIELDS = ("id", "backend", "url", "path", "name", "type", "kernel_id")

Record = dict[str, Any]


def default_dir() -> Path:
    """Jupyter's runtime directory, as `jupyter --runtime-dir` prints it."""
    return Path(jupyter_runtime_dir())


class HeldSessions:
    """The records, by client session id; every change is written at once.

    Relays sharing the file each change only the record they touch: under an
    exclusive `flock` of a lock file beside it, a change reads the file again,
    applies itself and writes the whole (atomically, by rename). Reads take the
    file again whenever its mtime or size changed, so another relay's records
    are seen without a restart.
    """

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / FILE_NAME if directory is not None else None
        self.records: dict[str, Record] = {}
        self.seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self.reload()

    def reload(self) -> None:
        """Read the file again if it changed since last read (another relay may have)."""
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except OSError:
            self.records, self.seen = {}, None
            return
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self.seen:
            self.records = self._read()

    def _read(self) -> dict[str, Record]:
        """The file's records; a file that is not ours to read is moved aside."""
        assert self.path is not None
        try:
            st = self.path.stat()
            data = json.loads(self.path.read_bytes())
            found = data["sessions"] if isinstance(data, dict) else None
            if not isinstance(found, list):
                raise ValueError('no "sessions" list')
        except FileNotFoundError:
            self.seen = None
            return {}
        except OSError as exc:
            log.warning("cannot read %s (%s); going on without its sessions", self.path, exc)
            return dict(self.records)
        except (ValueError, RecursionError) as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning(
                "%s is not a jupyter-relay sessions file (%s); moved it to %s and "
                "starting without its gateway sessions",
                self.path,
                str(exc)[:200],
                aside,
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.seen = None
            return {}
        self.seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        return {
            str(r["id"]): {k: r.get(k) for k in FIELDS}
            for r in found
            if isinstance(r, dict) and r.get("id")
        }

    def of(self, backend: str, url: str) -> list[Record]:
        self.reload()
        return [r for r in self.records.values() if r["backend"] == backend and r["url"] == url]

    def get(self, session_id: str) -> Record | None:
        self.reload()
        return self.records.get(session_id)

    def put(self, record: Record) -> None:
        self._change(str(record["id"]), {k: record.get(k) for k in FIELDS})

    def drop(self, session_id: str) -> None:
        self._change(session_id, None)

    def _change(self, session_id: str, record: Record | None) -> None:
        """Set (or, with None, remove) one record, merged into what the file holds now."""
        if self.path is None:
            if record is None:
                self.records.pop(session_id, None)
            else:
                self.records[session_id] = record
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.path.with_name(LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("cannot save gateway sessions to %s: %s", self.path, exc)
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for a local read and write, no more
            records = self._read()
            if record is None:
                records.pop(session_id, None)
            else:
                records[session_id] = record
            self.records = records
            self._write(records)
        finally:
            os.close(lock)  # and so the flock

    def _write(self, records: dict[str, Record]) -> None:
        assert self.path is not None
        body = json.dumps({"sessions": list(records.values())}, indent=1)
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".jupyter-relay-", dir=self.path.parent)
            with os.fdopen(fd, "w") as out:
                out.write(body)
            os.replace(tmp, self.path)
            st = self.path.stat()
            self.seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as exc:
            log.warning("cannot save gateway sessions to %s: %s", self.path, exc)
            if tmp:
                with contextlib.suppress(OSError):
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
