"""The relay's helper on an `ssh` backend's machine (`far_side`), alone and through real sshd.

Alone: the helper's program runs here as the remote runs it (`python -u -c`), and
a client speaks its protocol on its Unix socket: the greeting, the bridged bytes
and half-close, a refused port and a garbled greeting, the lifeline (stdin) and
signals, a 0700 directory and no TCP port. The shell command that picks the
Python next to the remote `jupyter` runs under `sh`.

Through sshd (tests/sshd.py): the relay starts the helper over its SSH
connection; the remote Jupyter's peer is then the helper, not sshd; the helper
goes when the relay stops or the SSH connection drops, and a new one serves
the same kernel after a reconnection; an sshd that forbids Unix-socket
forwarding gets direct-tcpip channels and a line in the log saying why.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import html
import logging
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupyter_relay.backends import remote as remote_commands
from jupyter_relay.backends.ssh import SshBackend
from jupyter_relay.backends.ssh_far import BANNER, program

from .conftest import WatchedRelay, watched_relay
from .kernel_client import run_code, start_kernel
from .servers import JupyterServer, free_port
from .sshd import Sshd, far_sides, running_sshd, start_remote_jupyter, start_sshd
from .test_ssh import (
    client_pids,
    only_sshd_talks_to,
    only_the_far_side_talks_to,
    wait_for_status,
)
from .waiting import eventually, eventually_sync

GPU = "gpu"
BOUND = 30.0  # seconds for what should take well under one


# --- the helper alone ---------------------------------------------------------------------


SPLICE_LINE = 'SPLICE = getattr(os, "splice", None)'


class Helper:
    def __init__(self, copying: bool = False) -> None:
        text = program()
        if copying:  # as on Python < 3.10, which has no os.splice
            assert SPLICE_LINE in text
            text = text.replace(SPLICE_LINE, "SPLICE = None")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", text],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith(BANNER), line
        self.path = line[len(BANNER) :].strip()

    def ends(self) -> int:
        return self.proc.wait(BOUND)


@pytest.fixture(params=["splice", "copy"])
def helper(request: pytest.FixtureRequest) -> Iterator[Helper]:
    running = Helper(copying=request.param == "copy")
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that echoes, and closes once the client half-closes."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def greet(path: str, line: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(line)
    return reader, writer


async def serves_the_next_connection(helper: Helper) -> None:
    """As if nothing had happened before."""
    async with echo_server() as port:
        reader, writer = await greet(helper.path, f"127.0.0.1 {port}\nhi".encode())
        async with asyncio.timeout(BOUND):
            assert await reader.readline() == b"ok\n"
            writer.write_eof()
            assert await reader.read() == b"hi"
        writer.close()


async def test_bridges_bytes_both_ways_with_half_close(helper: Helper) -> None:
    async with echo_server() as port:
        reader, writer = await greet(helper.path, f"127.0.0.1 {port}\nfirst ".encode())
        async with asyncio.timeout(BOUND):
            assert await reader.readline() == b"ok\n"
            big = os.urandom(4 * 1024 * 1024)
            writer.write(big)
            writer.write_eof()  # the echo server closes only once it sees this end
            echoed = await reader.read()  # to EOF: passed back by the helper
        assert echoed == b"first " + big
        writer.close()


async def test_a_side_that_breaks_ends_the_other(helper: Helper) -> None:
    """The target resets the connection mid-stream: the relay's side ends too, at once."""
    reset = asyncio.Event()

    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, not a FIN
        reset.set()

    server = await asyncio.start_server(breaks, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await greet(helper.path, f"127.0.0.1 {port}\n".encode())
        async with asyncio.timeout(BOUND):
            assert await reader.readline() == b"ok\n"
            writer.write(b"x")
            await reset.wait()
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""  # ended, not left hanging
        writer.close()
    finally:
        server.close()
    await serves_the_next_connection(helper)


async def test_a_refused_port_is_answered_with_its_errno_and_reason(helper: Helper) -> None:
    reader, writer = await greet(
        helper.path, f"127.0.0.1 {free_port()}\nGET / HTTP/1.1\r\n\r\n".encode()
    )
    async with asyncio.timeout(BOUND):
        answer = await reader.read()
    assert answer.startswith(f"error {errno.ECONNREFUSED} ".encode()), answer
    assert b"refused" in answer.lower() and answer.endswith(b"\n"), answer
    writer.close()


@pytest.mark.parametrize("greeting", [b"x" * 400, b"nonsense\n", b"127.0.0.1 notaport\n"])
async def test_a_garbled_greeting_is_refused(helper: Helper, greeting: bytes) -> None:
    reader, writer = await greet(helper.path, greeting)
    async with asyncio.timeout(BOUND):
        answer = await reader.read()
    assert answer.startswith(b"error "), answer
    writer.close()
    await serves_the_next_connection(helper)


@pytest.fixture(scope="module")
def shared_helper() -> Iterator[Helper]:
    running = Helper()
    yield running
    running.proc.kill()
    running.proc.wait()


def named_host(line: bytes) -> bool:
    """`<name> <digits>`: a target the helper would resolve (no DNS lookups in tests)."""
    parts = line.split()
    return len(parts) == 2 and parts[1].isdigit() and not parts[0].startswith(b"127.")


JUNK = st.binary(max_size=120).filter(lambda b: b"\n" not in b and not named_host(b))
LOOPBACK_TARGETS = st.builds(
    lambda host, port: f"127.0.0.{host} {port}".encode(),
    st.integers(0, 255),
    st.one_of(st.integers(0, 70000), st.integers(65536, 10**30)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(JUNK, LOOPBACK_TARGETS))
@example(b"127.0.0.1 70000")  # once left the connection unanswered
@example(b"127.0.0.1 99999999999999999999")
@example(b"127.0.0.1 +80")
@example(b"\xff\xfe 80")
def test_any_greeting_gets_one_answer_line_and_the_helper_lives_on(
    shared_helper: Helper, line: bytes
) -> None:
    async def ask() -> bytes:
        reader, writer = await greet(shared_helper.path, line + b"\n")
        try:
            async with asyncio.timeout(BOUND):
                return await reader.readline()
        finally:
            writer.close()

    answer = asyncio.run(ask())
    assert answer == b"ok\n" or re.fullmatch(rb"error \d+ [^\n]*\n", answer), answer
    assert shared_helper.proc.poll() is None


def test_listens_only_on_a_private_unix_socket(helper: Helper) -> None:
    directory = Path(helper.path).parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(Path(helper.path).stat().st_mode)
    inet = psutil.Process(helper.proc.pid).net_connections(kind="inet")
    assert not [c for c in inet if c.status == psutil.CONN_LISTEN], inet


@pytest.mark.parametrize("how", ["stdin closes", "SIGHUP", "SIGTERM"])
def test_ends_and_removes_its_socket_when_its_lifeline_goes(helper: Helper, how: str) -> None:
    directory = Path(helper.path).parent
    if how == "stdin closes":
        assert helper.proc.stdin is not None
        helper.proc.stdin.close()
    else:
        helper.proc.send_signal(getattr(signal, how))
    assert helper.ends() == 0
    assert not directory.exists()


def test_the_program_is_python_3_8_and_imports_only_the_standard_library() -> None:
    tree = ast.parse(program(), feature_version=(3, 8))  # jupyter_server 2 runs on 3.8
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_command_runs_the_python_next_to_jupyter(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in [("jupyter", "exit 0"), ("python3", 'echo "next to jupyter:" "$@"')]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{text}\n")
        (bin_dir / name).chmod(0o755)
    command = remote_commands.far_side_command(str(bin_dir / "jupyter"), "print('it is me')")
    ran = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    assert ran.stdout == "next to jupyter: -u -c print('it is me')\n", ran
    # `jupyter` found on PATH: the same.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    command = remote_commands.far_side_command("jupyter", "print('it is me')")
    ran = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env)
    assert ran.stdout.startswith("next to jupyter:"), ran


def test_the_command_says_when_there_is_no_python(tmp_path: Path) -> None:
    command = remote_commands.far_side_command("jupyter", "print(1)")
    ran = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, env={"PATH": str(tmp_path)}
    )
    assert ran.returncode == remote_commands.NOT_FOUND_STATUS, ran
    assert "no python3" in ran.stderr, ran


# --- through a real sshd ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("far-side")) as server:
        yield server


@pytest.fixture(scope="module")
def remote(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    server = start_remote_jupyter(sshd, tmp_path_factory.mktemp("far-side-root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_sshd(sshd: Sshd, remote: JupyterServer) -> Iterator[Sshd]:
    """The module's sshd with its base config, running again after the test."""
    yield sshd
    if not sshd.running() or sshd.config.read_text() != sshd.base_config:
        if sshd.running():
            sshd.stop()
        sshd.config.write_text(sshd.base_config)
        sshd.restart()


def ssh_relay(sshd: Sshd) -> contextlib.AbstractAsyncContextManager[WatchedRelay]:
    return watched_relay([sshd.backend_arg(GPU)], timeout=90)


async def reached(client: aiohttp.ClientSession, relay: WatchedRelay) -> str:
    """How the status says requests reach the ssh backend, on the page and in its JSON."""
    async with client.get(relay.base + "relay/api/status") as resp:
        (entry,) = [b for b in (await resp.json())["backends"] if b["name"] == GPU]
    async with client.get(relay.base + "relay/") as resp:
        page = await resp.text()
    assert html.escape(entry["reached"], quote=True) in page, page
    return str(entry["reached"])


def no_helper_left(sshd: Sshd) -> bool:
    assert far_sides(sshd) == []
    return True


async def test_the_helper_holds_the_far_end_and_goes_with_the_relay(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    sshd = live_sshd
    async with ssh_relay(sshd) as relay:
        assert "the relay's helper there" in relay.said, relay.said
        # The ssh config names no Ciphers: asyncssh's fastest, AES-GCM, was agreed on.
        backend = relay.running.relay.backends[GPU]
        assert isinstance(backend, SshBackend) and backend._conn is not None
        assert backend._conn.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
        assert "through the relay's helper there" in await reached(client, relay), relay.said
        kernel_id = await start_kernel(client, relay.base)
        url = f"{relay.base}api/kernels/{kernel_id}/channels"
        async with asyncio.timeout(60), client.ws_connect(url) as ws:
            only_the_far_side_talks_to(sshd, remote.port)
            (helper,) = far_sides(sshd)
            # The helper is a child of sshd's session, with no TCP port of its own.
            assert "sshd" in {p.name() for p in helper.parents()}
            inet = helper.net_connections(kind="inet")
            assert not [c for c in inet if c.status == psutil.CONN_LISTEN], inet
            sockets = [str(c.laddr) for c in helper.net_connections(kind="unix") if c.laddr]
            assert sockets, "the helper listens on a Unix socket"
            assert stat.S_IMODE(Path(sockets[0]).parent.stat().st_mode) == 0o700
            await ws.close()
        assert await run_code(client, relay.base, kernel_id, "print(6 * 7)") == "42"
        socket_dir = Path(sockets[0]).parent
    eventually_sync(lambda: no_helper_left(sshd), timeout=BOUND, what="the helper ends")
    assert not socket_dir.exists()
    async with aiohttp.ClientSession(headers=remote.headers) as direct:
        await direct.delete(f"{remote.base}api/kernels/{kernel_id}")


async def test_after_an_ssh_drop_a_new_helper_serves_the_same_kernel(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    sshd = live_sshd
    async with ssh_relay(sshd) as relay:
        kernel_id = await start_kernel(client, relay.base)
        assert await run_code(client, relay.base, kernel_id, "x = 41; print('set')") == "set"
        (before,) = far_sides(sshd)
        await asyncio.to_thread(sshd.stop)  # the SSH connection drops; the helper's stdin ends
        eventually_sync(lambda: no_helper_left(sshd), timeout=BOUND, what="the old helper ends")
        await asyncio.to_thread(sshd.restart)
        await wait_for_status(client, relay.base + "api/status", 200, 60)
        assert await run_code(client, relay.base, kernel_id, "print(x + 1)") == "42"
        (after,) = far_sides(sshd)
        assert after.pid != before.pid
        only_after = client_pids(remote.port)
        assert only_after <= {after.pid}, only_after
        await client.delete(f"{relay.base}api/kernels/{kernel_id}")


async def test_without_unix_socket_forwarding_channels_go_direct_and_the_log_says_why(
    live_sshd: Sshd,
    remote: JupyterServer,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sshd = live_sshd
    await asyncio.to_thread(sshd.reconfigure, "AllowStreamLocalForwarding no\n")
    caplog.set_level(logging.WARNING, logger="jupyter_relay.ssh")
    async with ssh_relay(sshd) as relay:
        assert "the relay's helper there" not in relay.said, relay.said
        warned = [
            r.getMessage() for r in caplog.records if "helper could not run" in r.getMessage()
        ]
        assert warned and "AllowStreamLocalForwarding" in warned[0], warned
        assert "40 ms" in warned[0], warned
        said = await reached(client, relay)
        assert "direct-tcpip" in said and "AllowStreamLocalForwarding" in said, said
        # Nothing of it is left running, and requests ride direct-tcpip channels (sshd's).
        await eventually(lambda: no_helper_left(sshd), timeout=BOUND, what="no helper runs")
        kernel_id = await start_kernel(client, relay.base)
        url = f"{relay.base}api/kernels/{kernel_id}/channels"
        async with asyncio.timeout(60), client.ws_connect(url) as ws:
            only_sshd_talks_to(remote.port)
            await ws.close()
        assert await run_code(client, relay.base, kernel_id, "print(6 * 7)") == "42"
        await client.delete(f"{relay.base}api/kernels/{kernel_id}")


async def test_through_a_proxyjump_host_the_helper_runs_on_the_last_one(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    jump = await asyncio.to_thread(start_sshd, tmp_path, alias="jump")
    try:
        config = live_sshd.client_config("jumped", extra="    ProxyJump jump\n")
        config.write_text(config.read_text() + jump.client_config("as-jump").read_text())
        arg = live_sshd.backend_arg(GPU, ssh_config=config)
        async with watched_relay([arg], timeout=90) as relay:
            assert "the relay's helper there" in relay.said, relay.said
            # The target's sshd is reached by the jump host's sshd, not by the relay.
            only_sshd_talks_to(live_sshd.port)
            assert os.getpid() not in client_pids(live_sshd.port)
            kernel_id = await start_kernel(client, relay.base)
            url = f"{relay.base}api/kernels/{kernel_id}/channels"
            async with asyncio.timeout(60), client.ws_connect(url) as ws:
                only_the_far_side_talks_to(live_sshd, remote.port)
                await ws.close()
            assert await run_code(client, relay.base, kernel_id, "print(6 * 7)") == "42"
            await client.delete(f"{relay.base}api/kernels/{kernel_id}")
    finally:
        await asyncio.to_thread(jump.stop)


async def test_a_helper_killed_alone_is_said_once_and_connections_go_direct(
    live_sshd: Sshd,
    remote: JupyterServer,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sshd = live_sshd
    caplog.set_level(logging.WARNING, logger="jupyter_relay.ssh")
    async with ssh_relay(sshd) as relay:
        kernel_id = await start_kernel(client, relay.base)
        (helper,) = far_sides(sshd)
        helper.kill()
        await asyncio.to_thread(helper.wait, BOUND)
        # The SSH connection lives on: the kernel answers, over sshd's own forwarding.
        for _ in range(3):
            assert await run_code(client, relay.base, kernel_id, "print(6 * 7)") == "42"
        said = [
            r.getMessage()
            for r in caplog.records
            if "helper on the ssh server ended" in r.getMessage()
        ]
        assert len(said) == 1 and "sshd's own forwarding" in said[0], said
        url = f"{relay.base}api/kernels/{kernel_id}/channels"
        async with asyncio.timeout(60), client.ws_connect(url) as ws:
            only_sshd_talks_to(remote.port)
            await ws.close()
        await client.delete(f"{relay.base}api/kernels/{kernel_id}")


async def test_helper_false_runs_nothing_there_and_says_so(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    sshd = live_sshd
    async with watched_relay([sshd.backend_arg(GPU, helper="false")], timeout=90) as relay:
        assert "turned off with ?helper=false" in await reached(client, relay)
        assert far_sides(sshd) == []
        kernel_id = await start_kernel(client, relay.base)
        assert await run_code(client, relay.base, kernel_id, "print(6 * 7)") == "42"
        await client.delete(f"{relay.base}api/kernels/{kernel_id}")
