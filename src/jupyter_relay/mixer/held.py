"""Sessions of kernels that run on gateways, kept by the relay in a small sqlite file.

A Kernel Gateway serves kernels, not sessions: its session API stores a path
and a kernel id, drops `name` and `type`, and cannot bind an existing kernel.
So, as Jupyter's own GatewayClient does, the relay keeps those sessions
itself, in `jupyter-relay-sessions.sqlite` in the state directory (WAL mode,
so several relays on one host read and write it at once; a writer waits up to
BUSY_MS for another). A record holds the session's id, path, name, type, its
kernel's id and the gateway's URL, which is what matches a record to a backend:
relays that name the same gateway differently share its sessions. The file
holds no secrets.

Kernels the relay starts for a session are recorded as pending before they
are started (`Pending`), so one whose session was never completed (the relay
died meanwhile) is found again and reconciled (see `orphans.py`).

An older relay's `jupyter-relay-sessions.json` is imported once, then renamed
`….json.imported`. `Store` is the file, synchronous; `HeldSessions` runs it on
a thread of its own, so a busy file never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any, TypeVar

from jupyter_core.paths import jupyter_runtime_dir
from yarl import URL

from .orphans import Pending

__all__ = ["Pending", "Record"]

log = logging.getLogger("jupyter_relay.mixer")

DB_NAME = "jupyter-relay-sessions.sqlite"
JSON_NAME = "jupyter-relay-sessions.json"  # what relays before the sqlite store kept
FIELDS = ("id", "backend", "url", "path", "name", "type", "kernel_id")
BUSY_MS = 10_000  # how long a write waits for another relay's (sqlite's busy timeout)

Record = dict[str, Any]
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, backend TEXT, url TEXT NOT NULL, path TEXT, name TEXT,
    type TEXT, kernel_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_url ON sessions (url);
CREATE TABLE IF NOT EXISTS pending (
    kernel_id TEXT PRIMARY KEY, url TEXT NOT NULL, backend TEXT, session_id TEXT NOT NULL,
    path TEXT, name TEXT, type TEXT, change INTEGER NOT NULL, owner TEXT NOT NULL,
    deadline REAL NOT NULL);
"""


def default_dir() -> Path:
    """Jupyter's runtime directory, as `jupyter --runtime-dir` prints it."""
    return Path(jupyter_runtime_dir())


def gateway_key(url: str) -> str:
    """What identifies a gateway across relays: its public URL, spelled one way.

    Scheme and host in lower case, the port explicit, no trailing slash, no query.
    """
    kind, plus, rest = url.partition("+")
    parsed = URL(rest if plus and "://" in rest else url)
    if not parsed.is_absolute():
        return url
    prefix = f"{kind.lower()}+" if plus and "://" in rest else ""
    path = parsed.path.rstrip("/")
    return f"{prefix}{parsed.scheme.lower()}://{(parsed.host or '').lower()}:{parsed.port}{path}"


# The statements, spelled out (their columns are FIELDS and Pending's fields, in order).
PUT = (
    "INSERT OR REPLACE INTO sessions (id, backend, url, path, name, type, kernel_id) "
    "VALUES (?,?,?,?,?,?,?)"
)
IMPORT = PUT.replace("OR REPLACE", "OR IGNORE")
ADD_PENDING = (
    "INSERT INTO pending (kernel_id, url, backend, session_id, path, name, type, change, "
    "owner, deadline) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def this_owner() -> str:
    """`host:pid` of this relay, as pending records name their owner."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the relay that owns a pending record runs. On another host: assumed
    (there only the record's deadline ends it)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _row(record: Record) -> tuple[Any, ...]:
    return tuple(_text(record.get(k)) for k in FIELDS)


class Store:
    """The sqlite file (or, with no directory, a database in memory); synchronous."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / DB_NAME if directory is not None else None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.db = self._open()
        if directory is not None:
            self._import(directory / JSON_NAME)

    def _open(self) -> sqlite3.Connection:
        target = str(self.path) if self.path is not None else ":memory:"
        try:
            return self._connect(target)
        except sqlite3.DatabaseError as exc:
            if self.path is None:
                raise
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.warning(
                "%s is not a jupyter-relay sessions database (%s); moved it to %s and "
                "starting without its gateway sessions",
                self.path,
                exc,
                aside,
            )
            os.replace(self.path, aside)
            return self._connect(target)

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=BUSY_MS / 1000, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at each checkpoint, never torn
        db.executescript(SCHEMA)
        return db

    def _import(self, old: Path) -> None:
        """An older relay's JSON file, once: its records added, the file renamed."""
        try:
            data = json.loads(old.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            aside = old.with_name(old.name + ".corrupt")
            log.warning(
                "%s is not a jupyter-relay sessions file (%s); moved it to %s",
                old,
                str(exc)[:200],
                aside,
            )
            with contextlib.suppress(OSError):
                os.replace(old, aside)
            return
        found = data.get("sessions") if isinstance(data, dict) else None
        records = [r for r in found or [] if isinstance(r, dict) and r.get("id")]
        with self.db:  # one transaction; a record already here (another relay's import) stays
            self.db.executemany(
                IMPORT,
                [_row({**r, "url": gateway_key(str(r.get("url", "")))}) for r in records],
            )
        with contextlib.suppress(FileNotFoundError):
            os.replace(old, old.with_name(old.name + ".imported"))
        log.info("imported %d gateway session(s) from %s into %s", len(records), old, self.path)

    # --- sessions ---------------------------------------------------------------------

    def of(self, url: str) -> list[Record]:
        rows = self.db.execute("SELECT * FROM sessions WHERE url = ?", (gateway_key(url),))
        return [dict(r) for r in rows]

    def get(self, session_id: str) -> Record | None:
        row = self.db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return dict(row) if row is not None else None

    def put(self, record: Record) -> None:
        with self.db:
            self._put(record)

    def _put(self, record: Record) -> None:
        row = _row({**record, "url": gateway_key(str(record["url"]))})
        self.db.execute(PUT, row)

    def drop(self, session_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # --- kernels being started ----------------------------------------------------------

    def add_pending(self, pending: Pending) -> None:
        row = astuple(replace(pending, url=gateway_key(pending.url)))
        with self.db:
            self.db.execute(ADD_PENDING, row)

    def all_pending(self) -> list[Pending]:
        rows = self.db.execute("SELECT * FROM pending")
        return [Pending(**{**dict(r), "change": bool(r["change"])}) for r in rows]

    def settle(self, kernel_id: str, record: Record | None = None) -> bool:
        """The start of `kernel_id` is over: forget it, and save `record` with it.

        True if this call took the pending record (so two relays reconciling the
        same record never both act on it); the record is saved either way.
        """
        with self.db:
            took = self.db.execute("DELETE FROM pending WHERE kernel_id = ?", (kernel_id,))
            if record is not None:
                self._put(record)
            return took.rowcount > 0

    def close(self) -> None:
        self.db.close()


class HeldSessions:
    """The store, its calls one at a time on a thread of its own (sqlite may wait for
    another relay's write; the event loop never does)."""

    def __init__(self, directory: Path | None) -> None:
        self.store = Store(directory)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="jupyter-relay-held")

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def of(self, url: str) -> list[Record]:
        return await self._run(lambda: self.store.of(url))

    async def get(self, session_id: str) -> Record | None:
        return await self._run(lambda: self.store.get(session_id))

    async def put(self, record: Record) -> None:
        await self._run(lambda: self.store.put(record))

    async def drop(self, session_id: str) -> None:
        await self._run(lambda: self.store.drop(session_id))

    async def add_pending(self, pending: Pending) -> None:
        await self._run(lambda: self.store.add_pending(pending))

    async def all_pending(self) -> list[Pending]:
        return await self._run(self.store.all_pending)

    async def settle(self, kernel_id: str, record: Record | None = None) -> bool:
        return await self._run(lambda: self.store.settle(kernel_id, record))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.store.close()


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
