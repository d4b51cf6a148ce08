"""Shared fixtures: real Jupyter servers, the relay in-process and as a command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jupyter_relay.config import load_config
from jupyter_relay.server import RunningRelay, start

from .servers import (
    JupyterServer,
    KernelGateway,
    RelayProcess,
    start_jupyter,
    start_kernel_gateway,
    start_relay_process,
)

RELAY_TOKEN = "relay-test-token-0123456789abcdef"
# The unit tier (`pytest -m unit`, a few seconds): modules of pure rules, no sockets.
UNIT_MODULES = frozenset(
    {
        "test_auth",
        "test_channel",
        "test_colab_protocol",
        "test_config",
        "test_cors",
        "test_discovery",
        "test_fast_chunked",
        "test_fast_client",
        "test_fast_exchange",
        "test_fast_head",
        "test_fast_tunnel",
        "test_gate",
        "test_metrics_rules",
        "test_headers",
        "test_health_history",
        "test_mixer_held",
        "test_mixer_names",
        "test_proxy_home",
        "test_proxy_rules",
        "test_responses",
        "test_routes",
        "test_scrub",
        "test_start_env",
        "test_ssh_config",
        "test_status_page",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: pure rules without sockets (pytest -m unit)")
    config.addinivalue_line(
        "markers", 'peers: the peers\' own suites through the relay (pytest -m "not peers")'
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


# In-process relays keep gateway sessions here, not in the user's runtime directory.
STATE_DIR = tempfile.mkdtemp(prefix="jupyter-relay-state-")
# And relays without --token keep theirs here (kept_token), not in the user's data directory:
# every relay of the session, in-process or not, reads this.
os.environ["JUPYTER_DATA_DIR"] = tempfile.mkdtemp(prefix="jupyter-relay-data-")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One real Jupyter server with ipykernel for the whole session."""
    root = tmp_path_factory.mktemp("root")
    (root / "hello.txt").write_text("hello from the backend\n")
    server = start_jupyter(root, tmp_path_factory.mktemp("jupyter"))
    yield server
    server.stop()


def relay_config(backends: list[str], **flags: Any) -> Any:
    values = {"port": "0", "token": RELAY_TOKEN, "log_level": "debug", "state_dir": STATE_DIR}
    values.update({k: v for k, v in flags.items()})
    values = {k: v for k, v in values.items() if v is not None}  # port=None: no --port
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_RELAY_")}
    env["JUPYTER_CONFIG_DIR"] = "/nonexistent"
    return load_config(values, backends, env)


async def start_relay(backends: list[str], **flags: Any) -> RunningRelay:
    return await start(relay_config(backends, **flags), lambda message: None)


@dataclass
class WatchedRelay:
    """An in-process relay and the progress lines it printed while starting."""

    running: RunningRelay
    progress: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.running.base_url

    @property
    def said(self) -> str:
        return "\n".join(self.progress)


@contextlib.asynccontextmanager
async def watched_relay(
    backends: list[str], *, timeout: float = 90, **flags: Any
) -> AsyncIterator[WatchedRelay]:
    """The relay in-process, keeping what it says while its backends start."""
    progress: list[str] = []
    async with asyncio.timeout(timeout):
        running = await start(relay_config(backends, **flags), progress.append)
    try:
        yield WatchedRelay(running, progress)
    finally:
        await running.stop()


@pytest.fixture
async def relay(jupyter: JupyterServer) -> AsyncIterator[RunningRelay]:
    """The relay in-process, in front of the session's Jupyter server."""
    running = await start_relay([f"lab={jupyter.backend_arg}"])
    yield running
    await running.stop()


@pytest.fixture(scope="module")
def relay_proc(jupyter: JupyterServer, workdir: Path) -> Iterator[RelayProcess]:
    """The `jupyter-relay` command in front of the session's Jupyter server."""
    proc = start_relay_process(
        ["--port", "0", "--token", RELAY_TOKEN, "--backend", f"lab={jupyter.backend_arg}"],
        workdir,
    )
    yield proc
    proc.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers={"Authorization": f"token {RELAY_TOKEN}"}, auto_decompress=False
    ) as session:
        yield session


@pytest.fixture
async def bulk_client() -> AsyncIterator[aiohttp.ClientSession]:
    """With the relay's token, for transfers of a GiB: a long timeout, large reads."""
    async with aiohttp.ClientSession(
        headers={"Authorization": f"token {RELAY_TOKEN}"},
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=120),
        read_bufsize=256 * 1024,
    ) as session:
        yield session


@pytest.fixture
async def anon() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without the relay's token; like a browser, it keeps cookies of IP hosts."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@dataclass
class Mixed:
    """Three real backends for the mixer: Jupyter servers `a` and `b`, Kernel Gateway `eg`.

    Each sets RELAY_TEST_BACKEND to its name, so a kernel can tell where it runs:
    `import os; print(os.environ["RELAY_TEST_BACKEND"])`.
    """

    a: JupyterServer
    b: JupyterServer
    eg: KernelGateway

    @property
    def backend_args(self) -> list[str]:
        return [f"a={self.a.backend_arg}", f"b={self.b.backend_arg}", f"eg={self.eg.backend_arg}"]


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    """Two Jupyter servers and a Kernel Gateway for the whole session."""
    work = tmp_path_factory.mktemp("mixed")
    servers: list[JupyterServer | KernelGateway] = []
    try:
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(f"root-{name}")
            (root / f"only-on-{name}.txt").write_text(f"file on {name}\n")
            servers.append(start_jupyter(root, work, env_extra={"RELAY_TEST_BACKEND": name}))
        # A kernel started with an `env` (as GatewayClient does) sees only listed variables.
        eg_env = {"RELAY_TEST_BACKEND": "eg", "KG_ENV_PROCESS_WHITELIST": "RELAY_TEST_BACKEND"}
        servers.append(start_kernel_gateway(work, env_extra=eg_env))
        a, b, eg = servers
        assert isinstance(a, JupyterServer) and isinstance(b, JupyterServer)
        assert isinstance(eg, KernelGateway)
        yield Mixed(a, b, eg)
    finally:
        for server in servers:
            server.stop()
