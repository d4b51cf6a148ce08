"""The fixtures `relay_plugin` registers: jp_base_url, jp_fetch and jp_ws_fetch via a relay."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import secrets
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.testing
import tornado.websocket
from jupyter_server.utils import url_path_join
from relay_command import relay_command  # type: ignore[import-not-found]  # tests/peers on the path
from tornado.escape import url_escape
from traitlets.config import Config

RELAY = os.environ.get("PEERS_RELAY") == "1"
RELAY_ARGS = shlex.split(os.environ.get("PEERS_RELAY_ARGS", ""))
BASE_URL = os.environ.get("PEERS_BASE_URL") or "/a%40b/"
# One relay for the whole run: every test server listens on the same port with the
# same token, so the relay in front of the first serves them all (PEERS_REUSE=0:
# a relay of its own for each test server, ~1 s more a test).
REUSE = os.environ.get("PEERS_REUSE", "1") == "1"
# PEERS_CLIENT=prefixed: the client asks the relay at the server's base URL (as
# pytest-jupyter's jp_fetch composes it); the relay serves those paths too, and answers
# them with the base kept. Otherwise the client asks at the relay's root.
PREFIXED = os.environ.get("PEERS_CLIENT") == "prefixed"
# PEERS_MIXED=1: a second, real Jupyter server behind the relay, mixed into its lists.
MIXED = os.environ.get("PEERS_MIXED") == "1"
EXTRA: list[str] = []  # --backend arguments of the second server, once it runs
URL_RE = re.compile(r"http://[^/\s]+:(\d+)/")
START_TIMEOUT = 30.0


class RelayProcess:
    """`python -m jupyter_relay` in front of one test server.

    The process is started at once (its imports overlap the rest of the test's
    setup) but its URL is awaited on the test's loop: the relay checks the backend
    at start, and the test server only answers while that loop runs.
    """

    def __init__(self, backend: str, state_dir: Path) -> None:
        self.token = secrets.token_hex(16)
        self.port: int | None = None
        self.stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        cmd = relay_command(self.token, backend, str(state_dir), [*EXTRA, *RELAY_ARGS])
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=str(state_dir),
        )
        self._ready: asyncio.Future[int] | None = None
        self.shown = 0  # how much of stderr was printed with earlier tests

    async def ready(self) -> int:
        if self.port is not None:
            return self.port
        # Each test has a loop of its own; a wait begun on an earlier one is begun again.
        if self._ready is None or self._ready.get_loop() is not asyncio.get_running_loop():
            self._ready = asyncio.ensure_future(self._read_port())
        return await asyncio.shield(self._ready)

    async def _read_port(self) -> int:
        loop = asyncio.get_running_loop()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(
            loop.run_in_executor(None, self.proc.stdout.readline), START_TIMEOUT
        )
        return self._port_from(line)

    def ready_now(self, timeout: float = START_TIMEOUT) -> int:
        """As `ready`, blocking: for a backend that answers on no loop of the test's."""
        if self.port is not None:
            return self.port
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self._port_from(self.proc.stdout.readline() if readable else "")

    def _port_from(self, line: str) -> int:
        """The port of the URL the relay printed (once its backend answered)."""
        match = URL_RE.search(line)
        if not match:
            raise RuntimeError(f"the relay printed no URL: {line!r}; stderr: {self.log()}")
        self.port = int(match.group(1))
        return self.port

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def show_new(self) -> None:
        """Print what the relay logged since the last call (into the test's captured output)."""
        text = self.log()
        new, self.shown = text[self.shown :], len(text)
        if new.strip():
            print(f"--- relay stderr ---\n{new}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        text = self.log()
        self.stderr.close()
        if text[self.shown :].strip():
            print(f"--- relay stderr ---\n{text[self.shown :]}")  # with the test's output


@pytest.fixture
def jp_base_url() -> str:
    return BASE_URL


@pytest.fixture(scope="session")
def peers_second_backend(tmp_path_factory):
    """With PEERS_MIXED=1: a second `jupyter server` for the whole run, behind every relay."""
    if not MIXED:
        yield None
        return
    root = tmp_path_factory.mktemp("second-root")
    token = secrets.token_hex(16)
    port = tornado.testing.bind_unused_port()
    number = port[0].getsockname()[1]
    port[0].close()
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={number}", "--ServerApp.port_retries=0",
         f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{number}/"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the second jupyter server did not start") from None
            time.sleep(0.2)
    EXTRA[:] = ["--backend", f"second={url}?token={token}"]
    yield url
    proc.terminate()
    proc.wait(10)


if RELAY and REUSE:
    PORT = tornado.testing.bind_unused_port()[0]
    PORT_NUMBER = PORT.getsockname()[1]
    PORT.close()
    TOKEN = secrets.token_hex(16)
    RELAYS: dict[str, RelayProcess] = {}

    @pytest.fixture
    def http_server_port():
        """The same port for every test server (pytest-tornasync's: a new one each time)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", PORT_NUMBER))
        sock.listen(128)
        sock.setblocking(False)
        return sock, PORT_NUMBER

    @pytest.fixture
    def jp_serverapp(jp_server_config, jp_argv, jp_configurable_serverapp):
        """pytest-jupyter's, with the same token for every test server (unless a test sets one)."""
        config = Config(copy.deepcopy(jp_server_config))  # tests give dicts or Configs
        if "token" not in config.ServerApp and not config.IdentityProvider.get("token"):
            config.IdentityProvider.token = TOKEN
        return jp_configurable_serverapp(config=config, argv=jp_argv)

    @pytest.fixture(scope="session")
    def peers_relays(tmp_path_factory, peers_second_backend):
        state = tmp_path_factory.mktemp("relay-state")
        yield (
            lambda backend: (
                RELAYS.get(backend) or RELAYS.setdefault(backend, RelayProcess(backend, state))
            )
        )
        for relay in RELAYS.values():
            relay.stop()

    @pytest.fixture
    def peers_relay(peers_relays, jp_serverapp, jp_http_port, jp_base_url):
        token = jp_serverapp.identity_provider.token
        query = urllib.parse.urlencode({"token": token})
        relay = peers_relays(f"http://127.0.0.1:{jp_http_port}{jp_base_url}?{query}")
        yield relay
        relay.show_new()

elif RELAY:

    @pytest.fixture
    def peers_relay(jp_serverapp, jp_http_port, jp_base_url, tmp_path, peers_second_backend):
        token = jp_serverapp.identity_provider.token
        query = urllib.parse.urlencode({"token": token})
        backend = f"http://127.0.0.1:{jp_http_port}{jp_base_url}?{query}"
        state = tmp_path / "relay-state"
        state.mkdir()
        relay = RelayProcess(backend, state)
        yield relay
        relay.stop()


if RELAY:

    def _path(parts: tuple[str, ...], params: dict[str, Any] | None) -> str:
        # As pytest-jupyter's jp_fetch: the joined parts url-escaped, then under the base:
        # the server's (PEERS_CLIENT=prefixed) or the relay's root.
        path_url = url_escape(url_path_join(*parts), plus=False)
        base = BASE_URL if PREFIXED else "/"
        return url_path_join(base, path_url) + "?" + urllib.parse.urlencode(params or {})

    @pytest.fixture
    def jp_fetch(peers_relay, http_server_client):
        def client_fetch(*parts, headers=None, params=None, **kwargs) -> Awaitable[Any]:
            headers = dict(headers or {})
            headers.setdefault("Authorization", f"token {peers_relay.token}")
            request_timeout = kwargs.pop("request_timeout", 20)

            async def fetch() -> Any:
                port = await peers_relay.ready()
                url = f"http://127.0.0.1:{port}{_path(parts, params)}"
                # The fixture's client prefixes its server's URL; its base class does not.
                return await tornado.httpclient.AsyncHTTPClient.fetch(
                    http_server_client,
                    url,
                    headers=headers,
                    request_timeout=request_timeout,
                    **kwargs,
                )

            return asyncio.ensure_future(fetch())

        return client_fetch

    @pytest.fixture
    def jp_ws_fetch(peers_relay):
        def client_fetch(*parts, headers=None, params=None, **kwargs) -> Awaitable[Any]:
            headers = dict(headers or {})
            headers.setdefault("Authorization", f"token {peers_relay.token}")
            allowed = {
                "callback",
                "connect_timeout",
                "on_message_callback",
                "compression_options",
                "ping_interval",
                "ping_timeout",
                "max_message_size",
                "subprotocols",
                "resolver",
            }
            kwargs = {k: v for k, v in kwargs.items() if k in allowed}

            async def connect() -> Any:
                port = await peers_relay.ready()
                url = f"ws://127.0.0.1:{port}{_path(parts, params)}"
                req = tornado.httpclient.HTTPRequest(url, headers=headers, connect_timeout=120)
                return await tornado.websocket.websocket_connect(req, **kwargs)

            return asyncio.ensure_future(connect())

        return client_fetch
