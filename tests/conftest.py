"""Shared fixtures: real Jupyter servers, the relay in-process and as a command."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jupyter_relay.config import load_config
from jupyter_relay.server import RunningRelay, start

from .servers import JupyterServer, RelayProcess, start_jupyter, start_relay_process

RELAY_TOKEN = "relay-test-token-0123456789abcdef"


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
    values = {"port": "0", "token": RELAY_TOKEN, "log_level": "debug"}
    values.update({k: v for k, v in flags.items()})
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_RELAY_")}
    env["JUPYTER_CONFIG_DIR"] = "/nonexistent"
    return load_config(values, backends, env)


async def start_relay(backends: list[str], **flags: Any) -> RunningRelay:
    return await start(relay_config(backends, **flags), lambda message: None)


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
async def anon() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without the relay's token; like a browser, it keeps cookies of IP hosts."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
