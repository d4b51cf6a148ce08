"""Helpers for the port proxy's tests: relays configured for it, requests read whole.

`proxy_relay` runs the relay in-process (as `watched_relay` does) with port-proxy flags
and, optionally, a TOML file (named apps live only there). `proxy_command` runs the
`jupyter-relay` command, optionally inside a private mount namespace whose /etc/hosts
is a file of the test's (`unshare -m`, as root), so names resolve as the test says
without touching the machine's resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from multidict import CIMultiDictProxy
from yarl import URL

from jupyter_relay.config import load_config
from jupyter_relay.server import start

from .conftest import RELAY_TOKEN, STATE_DIR, WatchedRelay
from .servers import BIN, RelayProcess, start_relay_process
from .waiting import eventually

WEBAPPS = Path(__file__).resolve().parent / "webapps.py"
PREFIX_HEADERS = ("X-Forwarded-Prefix", "X-Forwarded-Context", "X-ProxyContextPath")
AUTH = {"Authorization": f"token {RELAY_TOKEN}"}


# --- relays -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def proxy_relay(
    backends: Sequence[str],
    *,
    toml: str | None = None,
    workdir: Path | None = None,
    timeout: float = 60,
    **flags: Any,
) -> AsyncIterator[WatchedRelay]:
    """The relay in-process; `flags` as the command's (`proxy_allow=[...]`), `toml` as a file."""
    values: dict[str, Any] = {
        "port": "0",
        "token": RELAY_TOKEN,
        "log_level": "debug",
        "state_dir": STATE_DIR,
    }
    values.update(flags)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_RELAY_")}
    env["JUPYTER_CONFIG_DIR"] = "/nonexistent"
    config_path: str | None = None
    if toml is not None:
        assert workdir is not None, "a TOML file needs a workdir"
        path = workdir / f"relay-{time.monotonic_ns()}.toml"
        path.write_text(toml)
        config_path = str(path)
    progress: list[str] = []
    config = load_config(values, list(backends), env, config_path)
    async with asyncio.timeout(timeout):
        running = await start(config, progress.append)
    try:
        yield WatchedRelay(running, progress)
    finally:
        await running.stop()


def proxy_command(
    args: Sequence[str],
    workdir: Path,
    *,
    hosts: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> RelayProcess:
    """`jupyter-relay --port 0 --token ... ARGS`; with `hosts`, that file is its /etc/hosts."""
    wrap = None
    if hosts is not None:

        def wrap(command: list[str]) -> list[str]:
            # unshare without --fork execs: the pid is the relay's own once sh execs it.
            mount = f"mount --bind {shlex.quote(str(hosts))} /etc/hosts"
            return ["unshare", "-m", "sh", "-c", f"{mount} && exec {shlex.join(command)}"]

    return start_relay_process(
        ["--port", "0", "--token", RELAY_TOKEN, *args],
        workdir,
        env={"JUPYTER_CONFIG_DIR": "/nonexistent", **(env or {})},
        timeout=timeout,
        wrap=wrap,
    )


def webapp_command(port: str = "{port}") -> list[str]:
    """The command line of tests/webapps.py as a program (for named apps and children)."""
    return [str(BIN / "python"), str(WEBAPPS), "--port", port]


# --- requests -----------------------------------------------------------------------------


@dataclass
class Got:
    """One response read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip()

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


def url(base: str, path: str) -> URL:
    """`base` + `path` sent exactly as written (no re-encoding of %2F and co.)."""
    return URL(base.rstrip("/") + path, encoded=True)


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    target: str | URL,
    *,
    timeout: float = 30,
    **kwargs: Any,
) -> Got:
    kwargs.setdefault("allow_redirects", False)
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        async with session.request(method, target, **kwargs) as resp:
            text = await resp.text(errors="replace")
            return Got(resp.status, resp.headers, text, time.monotonic() - started)


@dataclass
class Seen:
    """What the echo app reported about the request that reached it."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    size: int
    raw: dict[str, Any]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def prefix_headers(self) -> dict[str, str | None]:
        return {name: self.header(name) for name in PREFIX_HEADERS}


def seen(got: Got) -> Seen:
    assert got.status == 200, (got.status, got.text[:500])
    data = got.json
    assert isinstance(data, dict) and "path" in data, got.text[:500]
    return Seen(
        data["method"],
        data["path"],
        data["query"],
        [(k, v) for k, v in data["headers"]],
        int(data.get("size", 0)),
        data,
    )


def assert_json_error(got: Got, status: int, *patterns: str) -> str:
    """Jupyter's JSON error shape with this status; its message matches each regex."""
    assert got.status == status, (got.status, got.text[:500])
    assert got.content_type == "application/json", (got.content_type, got.text[:500])
    body = got.json
    assert isinstance(body, dict) and {"message", "reason"} <= body.keys(), body
    message = body["message"]
    assert isinstance(message, str) and message, body
    for pattern in patterns:
        assert re.search(pattern, message, re.IGNORECASE), (pattern, message)
    return message


async def raw_request(port: int, head: bytes, timeout: float = 15) -> tuple[int, bytes, bytes]:
    """Send `head` (a request without body, as bytes) to 127.0.0.1:`port`; read it all.

    For paths no HTTP client would send as they are (raw `<`, `"`). Returns the status,
    the response head and the body (chunked bodies undone roughly: enough to search).
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head_bytes)
    assert match, data[:300]
    return int(match.group(1)), head_bytes, body


# --- processes ----------------------------------------------------------------------------


def clients_of(port: int) -> dict[int, str]:
    """Pid -> process name of whatever holds an established TCP connection to `port`."""
    conns = psutil.net_connections(kind="inet")
    peers = {
        (c.raddr.ip, c.raddr.port)
        for c in conns
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED and c.raddr
    }
    found: dict[int, str] = {}
    for c in conns:
        if c.laddr and (c.laddr.ip, c.laddr.port) in peers and c.pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                found[c.pid] = psutil.Process(c.pid).name()
    return found


def gone(pid: int) -> bool:
    """No such process, or only a zombie left."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_until_gone(pids: Sequence[int], bound: float = 10, *, what: str) -> None:
    """Wait up to `bound` s for every pid to be gone; fail naming those still alive."""

    def none_alive() -> bool:
        alive = [p for p in pids if not gone(p)]
        assert not alive, f"still alive: {alive}"
        return True

    await eventually(none_alive, timeout=bound, what=what)


# --- config files -------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """The TOML spelling of a string, number, bool, list or table of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def relay_toml(settings: Mapping[str, Any] | None = None, **apps: Mapping[str, Any]) -> str:
    """A config file: top-level settings, then one `[apps.<name>]` table per keyword."""
    lines = [f"{key} = {toml_value(value)}" for key, value in (settings or {}).items()]
    for name, table in apps.items():
        lines.append(f"\n[apps.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"
