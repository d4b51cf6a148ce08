"""The `ssh` backend against a real OpenSSH server on loopback.

sshd (tests/sshd.py) runs as root on a random port with generated keys, a private
known_hosts and a private ssh_config naming it `gpu-box`; the "remote" Jupyter runs on
this machine on a port the relay is never told, so the relay must log in, run `jupyter
server list` there, and ride the SSH connection to it. Covered: discovery, a kernel over
the v1 websocket subprotocol, a 256 MiB download, start-on-demand, a changed or unknown
host key, a key the server does not accept, a missing `jupyter`, sshd killed and restarted
under a live kernel (the recovery time is printed), sshd refusing sessions or channels
(the relay says so and keeps reconnecting), the ssh config's keepalives, missing
IdentityFiles and `UserKnownHostsFile none`, tokens in remote output, password prompts
(with asyncssh's server: the fixture sshd takes keys only), a request in flight when SSH
drops, several servers and `jupyter_port=`, the `jupyter notebook list` fallback, and the
`jupyter-relay` command's progress lines and one-line errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import resource
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pexpect  # type: ignore[import-untyped]
import psutil
import pytest

from jupyter_relay.backends import ssh as ssh_backend
from jupyter_relay.backends.base import Timeouts
from jupyter_relay.backends.ssh import MIN_SPACING, SshBackend
from jupyter_relay.errors import BackendUnreachable
from jupyter_relay.specs import parse_backend

from .answers import Answer, assert_error, call
from .conftest import RELAY_TOKEN, WatchedRelay, watched_relay
from .kernel_client import V1, execute, run_code, start_kernel
from .password_sshd import PASSWORD, password_sshd
from .servers import BIN, JupyterServer, RelayProcess, free_port, start_relay_process
from .sshd import (
    Sshd,
    far_sides,
    keygen,
    kill_remote_processes,
    public_key,
    running_sshd,
    runtime_servers,
    start_remote_jupyter,
    start_sshd,
)
from .waiting import eventually, eventually_sync

GPU = "gpu"  # the backend's name in every relay here
REMOTE_FILE = "hello-remote.txt"
BIG_SIZE = 256 * 1024 * 1024
CHUNK = 4 * 1024 * 1024
# A request while sshd is down must fail within this, not hang.
FAIL_BOUND = 15.0
# sshd back up -> the relay serves again within this.
RECOVERY_BOUND = 30.0
# Start-on-demand: connect, start `jupyter server` remotely, find it.
START_BOUND = 90.0


# --- helpers ------------------------------------------------------------------------------


def assert_502(answer: Answer, *patterns: str) -> str:
    """A 502 JSON error naming the backend, whose message matches each regex in `patterns`."""
    message = assert_error(answer, 502, GPU)
    for pattern in patterns:
        assert re.search(pattern, message, re.IGNORECASE), (pattern, message)
    return message


def ssh_relay(*backends: str) -> contextlib.AbstractAsyncContextManager[WatchedRelay]:
    return watched_relay(list(backends), timeout=START_BOUND)


async def gpu_status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    answer = await call(session, "GET", base + "relay/api/status")
    assert answer.status == 200, answer.text
    found = {b["name"]: b for b in answer.body["backends"]}
    assert GPU in found, answer.body
    entry: dict[str, Any] = found[GPU]
    assert entry["kind"] == "ssh", entry
    return entry


async def content_names(session: aiohttp.ClientSession, base: str) -> set[str]:
    answer = await call(session, "GET", base + "api/contents")
    assert answer.status == 200, answer.text
    return {item["name"] for item in answer.body["content"]}


async def wait_for_status(
    session: aiohttp.ClientSession, url: str, status: int, bound: float
) -> tuple[float, list[Answer]]:
    """Poll `url` until it answers `status`; return how long that took and what came before."""
    started = time.monotonic()
    seen: list[Answer] = []

    async def answered() -> bool:
        answer = await call(session, "GET", url, timeout=FAIL_BOUND)
        if answer.status != status:
            seen.append(answer)
        assert answer.status == status, [(a.status, a.text[:300]) for a in seen[-3:]]
        return True

    await eventually(answered, timeout=bound, what=f"{url} answers {status}")
    return time.monotonic() - started, seen


def other_host_key(sshd: Sshd, tag: str) -> str:
    path = sshd.dir / f"other-host-key-{tag}"
    return public_key(keygen(path, "not the server's key"))


def listening_addresses() -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def listening_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def client_pids(port: int) -> set[int]:
    """The processes with a TCP connection to 127.0.0.1:`port`."""
    conns = psutil.net_connections(kind="tcp")
    peers = {
        (c.raddr.ip, c.raddr.port)
        for c in conns
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED and c.raddr
    }
    return {
        c.pid
        for c in conns
        if c.laddr and (c.laddr.ip, c.laddr.port) in peers and c.pid is not None
    }


def clients_of(port: int) -> set[str]:
    """The names of the processes with a TCP connection to 127.0.0.1:`port`."""
    names: set[str] = set()
    for pid in client_pids(port):
        with contextlib.suppress(psutil.NoSuchProcess):
            names.add(psutil.Process(pid).name())
    return names


def only_sshd_talks_to(port: int) -> None:
    """What holds the connections to `port` is sshd alone (its own forwarding, no helper)."""
    names = {psutil.Process(pid).name() for pid in client_pids(port)}
    assert names and all(n.startswith("sshd") for n in names), names


def only_the_far_side_talks_to(sshd: Sshd, port: int) -> None:
    """What holds the connections to the remote `port` is the relay's helper there, alone."""
    helpers = {p.pid for p in far_sides(sshd)}
    assert len(helpers) == 1, helpers
    pids = client_pids(port)
    assert pids and pids <= helpers, (pids, helpers, clients_of(port))


def wait_for_log(proc: RelayProcess, pattern: str, bound: float = 60) -> str:
    """The relay command's stderr once a line matches `pattern`; fail after `bound` s."""

    def logged() -> str | None:
        text = proc.logs()
        if re.search(pattern, text, re.IGNORECASE | re.MULTILINE):
            return text
        assert proc.proc.poll() is None, f"jupyter-relay exited: {text}"
        return None

    what = f"a line matching {pattern!r}"
    return eventually_sync(logged, timeout=bound, interval=0.1, what=what, ignoring=())


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh")


@pytest.fixture(scope="module")
def sshd(ssh_work: Path) -> Iterator[Sshd]:
    """sshd for the module; tests that stop it start it again."""
    with running_sshd(ssh_work) as server:
        yield server


@pytest.fixture(scope="module")
def remote(sshd: Sshd, ssh_work: Path) -> Iterator[JupyterServer]:
    """The "remote" Jupyter, announced only in sshd's runtime directory."""
    root = ssh_work / "remote-root"
    root.mkdir()
    (root / REMOTE_FILE).write_text("hello from the other side of SSH\n")
    server = start_remote_jupyter(sshd, root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_sshd(sshd: Sshd) -> Iterator[Sshd]:
    """The module's sshd, running again with its own config after the test whatever happened."""
    yield sshd
    if sshd.config.read_text() != sshd.base_config:
        sshd.reconfigure("")
    elif not sshd.running():
        sshd.restart()


@pytest.fixture
def empty_sshd(ssh_work: Path) -> Iterator[Sshd]:
    """An sshd of its own whose runtime directory has no Jupyter yet."""
    server = start_sshd(ssh_work)
    try:
        yield server
    finally:
        server.stop()
        kill_remote_processes(server)


# --- 1. discovery -------------------------------------------------------------------------


async def test_discovers_the_remote_jupyter_over_ssh(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    arg = sshd.backend_arg()
    assert str(remote.port) not in arg and remote.token not in arg
    before = listening_ports()
    async with ssh_relay(arg) as relay:
        assert REMOTE_FILE in await content_names(client, relay.base)
        answer = await call(client, "GET", relay.base + "api/status")
        assert answer.status == 200, answer.text
        assert {"started", "last_activity"} <= answer.body.keys(), answer.body
        entry = await gpu_status(client, relay.base)
        assert entry["reachable"] is True and entry["error"] is None, entry
        # The token of the remote Jupyter never shows.
        assert remote.token not in json.dumps(entry)
        # It said where it connects and which server it found.
        assert re.search(rf"\b{GPU}\b.*connect.*SSH", relay.said, re.IGNORECASE), relay.said
        assert re.search(rf"\b{remote.port}\b", relay.said), relay.said
        assert remote.token not in relay.said
        # Whatever the tunnel is, nothing of ours listens beyond loopback.
        assert listening_addresses() <= {"127.0.0.1", "::1"}, listening_addresses()
        # And the tunnel opens no local port at all: requests ride direct-tcpip channels.
        opened = listening_ports() - before
        assert opened == {relay.running.port}, (opened, relay.running.port)


# --- 2. a kernel over the tunnel ----------------------------------------------------------


async def test_executes_code_over_the_tunnel_with_v1_websocket(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    async with ssh_relay(sshd.backend_arg()) as relay:
        kernel_id = await start_kernel(client, relay.base)
        try:
            url = f"{relay.base}api/kernels/{kernel_id}/channels"
            async with asyncio.timeout(60), client.ws_connect(url, protocols=(V1,)) as ws:
                assert ws.protocol == V1
                out, reply = await execute(ws, "print(6*7)")
                assert reply["content"]["status"] == "ok" and out == "42\n", (out, reply)
                # While it is open, what talks to the remote Jupyter is the relay's helper
                # there (not the relay, not sshd: see test_ssh_far_side.py).
                only_the_far_side_talks_to(sshd, remote.port)
            # It runs under the remote Jupyter: the environment sshd's side gave it.
            where = await run_code(
                client, relay.base, kernel_id, 'import os; print(os.environ["JUPYTER_RUNTIME_DIR"])'
            )
            assert where == str(sshd.runtime_dir)
            async with aiohttp.ClientSession(headers=remote.headers) as direct:
                answer = await call(direct, "GET", f"{remote.base}api/kernels/{kernel_id}")
                assert answer.status == 200, answer.text
        finally:
            answer = await call(client, "DELETE", f"{relay.base}api/kernels/{kernel_id}")
            assert answer.status == 204, answer.text


# --- 3. a big download --------------------------------------------------------------------


async def test_256_mib_download_streams_through_the_tunnel(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    name = f"big-{secrets.token_hex(4)}.bin"
    path = remote.root / name
    expected = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(BIG_SIZE // CHUNK):
            chunk = os.urandom(CHUNK)
            expected.update(chunk)
            out.write(chunk)
    try:
        async with ssh_relay(sshd.backend_arg()) as relay:
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            got = hashlib.sha256()
            size = 0
            started = time.monotonic()
            async with asyncio.timeout(300):
                async with client.get(f"{relay.base}files/{name}") as resp:
                    assert resp.status == 200, await resp.text()
                    assert resp.headers.get("Content-Length") in (None, str(BIG_SIZE))
                    async for piece in resp.content.iter_chunked(1024 * 1024):
                        if not size:  # mid-stream, the bytes come from the remote side
                            only_the_far_side_talks_to(sshd, remote.port)
                        got.update(piece)
                        size += len(piece)
            seconds = time.monotonic() - started
            peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert size == BIG_SIZE
        assert got.hexdigest() == expected.hexdigest()
        # The relay runs in this process: it streamed, it did not hold the file.
        assert peak_after - peak_before < BIG_SIZE // 2, (peak_before, peak_after)
        print(
            f"\n256 MiB through the SSH tunnel in {seconds:.1f} s "
            f"({BIG_SIZE / seconds / 2**20:.0f} MiB/s)"
        )
    finally:
        path.unlink()


# --- 4. start on demand -------------------------------------------------------------------


async def test_starts_a_remote_jupyter_on_demand_that_outlives_the_session(
    empty_sshd: Sshd, client: aiohttp.ClientSession
) -> None:
    assert runtime_servers(empty_sshd) == {}
    # Without start=true: a clear 502, and nothing started.
    async with ssh_relay(empty_sshd.backend_arg()) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        assert_502(answer, r"jupyter.*\b(runs?|running)\b")
        assert runtime_servers(empty_sshd) == {}

    async with ssh_relay(empty_sshd.backend_arg(start="true")) as relay:
        answer = await call(client, "GET", relay.base + "api/status")
        assert answer.status == 200, answer.text
        assert (await call(client, "GET", relay.base + "api/contents")).status == 200
        servers = runtime_servers(empty_sshd)
        assert len(servers) == 1, servers
        pid = next(iter(servers))
        started = psutil.Process(pid)
        assert os.getpid() not in {p.pid for p in started.parents()}, started.parents()
        # The progress names the log of the started server (on the remote: ~ is its HOME),
        # and that file is the server's log.
        named = [
            Path(re.sub(r"^~", str(empty_sshd.home), p))
            for line in relay.progress
            if "log" in line.lower()
            for p in re.findall(r"(~?/[^\s'\"(),;]+)", line)
        ]
        logs = [p for p in named if p.is_file()]
        assert logs, relay.progress
        assert f":{servers[pid]['port']}/" in logs[0].read_text(), logs[0].read_text()[-2000:]
    try:
        # The relay and its SSH session are gone (sshd's session process has ended); the
        # server it started is not: it still runs, and the next relay is served by it.
        await eventually(
            lambda: not session_processes(empty_sshd),
            timeout=10,
            what="the first relay's SSH session ended on the sshd side",
        )
        assert started.is_running() and started.status() != psutil.STATUS_ZOMBIE
        # A second relay with start=true uses it rather than starting another.
        async with ssh_relay(empty_sshd.backend_arg(start="true")) as relay:
            assert (await call(client, "GET", relay.base + "api/status")).status == 200
            assert set(runtime_servers(empty_sshd)) == {pid}
            assert re.search(rf"\b{servers[pid]['port']}\b", relay.said), relay.said
    finally:
        killed = kill_remote_processes(empty_sshd)
        assert killed, "the started Jupyter was not found to clean up"


# --- 5. host keys -------------------------------------------------------------------------


async def test_changed_host_key_is_refused(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    known_hosts = sshd.dir / "known_hosts-changed"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other_host_key(sshd, 'changed')}\n")
    before = known_hosts.read_text()
    config = sshd.client_config("changed", known_hosts=known_hosts)
    # The real client refuses it too: the fixture is what it claims to be.
    done = sshd.ssh("true", ssh_config=config)
    assert done.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in done.stderr
    async with ssh_relay(sshd.backend_arg(ssh_config=config)) as relay:
        for _ in range(2):  # refused again when retried, never accepted on the way
            answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
            assert_502(answer, r"host key", r"known_hosts")
        entry = await gpu_status(client, relay.base)
        assert entry["reachable"] is False and "host key" in entry["error"].lower(), entry
        # The relay still answers what it can.
        assert (await call(client, "GET", relay.base + "relay/api/status")).status == 200
    assert known_hosts.read_text() == before


async def test_unknown_host_key_is_refused(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    known_hosts = sshd.dir / "known_hosts-empty"
    known_hosts.write_text("")
    config = sshd.client_config("unknown", known_hosts=known_hosts)
    done = sshd.ssh("true", ssh_config=config)
    assert done.returncode == 255 and "Host key verification failed" in done.stderr
    async with ssh_relay(sshd.backend_arg(ssh_config=config)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        assert_502(answer, r"host key", r"known_hosts")
        assert (await call(client, "GET", relay.base + "relay/api/status")).status == 200
    assert known_hosts.read_text() == ""


# --- 6. a key the server does not accept --------------------------------------------------


async def test_wrong_key_is_refused(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    stranger = sshd.dir / "id_stranger"
    keygen(stranger, "a key sshd does not know")
    config = sshd.client_config("stranger", identity=stranger)
    done = sshd.ssh("true", ssh_config=config)
    assert done.returncode == 255 and "Permission denied" in done.stderr
    async with ssh_relay(sshd.backend_arg(ssh_config=config)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        # It names who was refused where: root@gpu-box, or the user and the host apart.
        assert_502(
            answer,
            r"\broot@(127\.0\.0\.1|gpu-box)\b|\broot\b.*\b(127\.0\.0\.1|gpu-box)\b"
            r"|\b(127\.0\.0\.1|gpu-box)\b.*\broot\b",
            r"refused|denied|rejected",
        )
        entry = await gpu_status(client, relay.base)
        assert entry["reachable"] is False and entry["error"], entry


# --- 7. no jupyter on the remote ----------------------------------------------------------


async def test_missing_jupyter_command_is_named(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    missing = "/nonexistent/jupyter"
    async with ssh_relay(sshd.backend_arg(jupyter=missing)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        assert_502(answer, re.escape(missing))
        assert (await call(client, "GET", relay.base + "relay/api/status")).status == 200


async def test_unresolvable_and_unreachable_hosts_are_named_and_others_keep_working(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """No DNS answer and no sshd listening: each its own 502 line; the good backend serves."""
    closed = free_port()
    config = sshd.dir / "ssh_config-elsewhere"
    config.write_text(
        f"Host nowhere\n    HostName nosuchhost.invalid\n"
        f"Host closed\n    HostName 127.0.0.1\n    Port {closed}\n"
        f"Host *\n    UserKnownHostsFile {sshd.known_hosts}\n    IdentityFile {sshd.user_key}\n"
    )
    async with ssh_relay(
        sshd.backend_arg(),
        f"dns=ssh://nowhere?ssh_config={config}",
        f"down=ssh://closed?ssh_config={config}",
    ) as relay:
        assert await content_names(client, relay.base)  # the good one serves meanwhile
        answers = {}
        for name in ("dns", "down"):
            url = f"{relay.base}api/kernels/00000000-0000-4000-8000-000000000000"
            answers[name] = await call(client, "GET", url, timeout=FAIL_BOUND)
        # The kernel is asked of every backend; those two cannot be asked, and say why.
        message = assert_error(answers["dns"], 502)
        assert "cannot resolve host 'nowhere'" in message or "nosuchhost.invalid" in message
        assert "Connection refused" in message and "'down'" in message
        progress = "\n".join(relay.progress)
        assert "backend 'dns': cannot resolve host" in progress, progress
        assert "backend 'down': cannot connect to closed over SSH" in progress, progress


# --- 8. sshd killed and restarted under a live kernel ------------------------------------


async def test_recovers_when_sshd_is_killed_and_restarted(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    sshd = live_sshd
    async with ssh_relay(sshd.backend_arg()) as relay:
        base = relay.base
        kernel_id = await start_kernel(client, base)
        kernel_url = f"{base}api/kernels/{kernel_id}"
        try:
            assert await run_code(client, base, kernel_id, "x = 6*7; print(x)") == "42"
            async with client.ws_connect(kernel_url + "/channels", protocols=(V1,)) as ws:
                dropped = time.monotonic()
                await asyncio.to_thread(sshd.stop)  # the relay's loop runs meanwhile

                # The open websocket ends; it does not hang.
                async with asyncio.timeout(FAIL_BOUND):
                    while True:
                        msg = await ws.receive()
                        if msg.type in (
                            aiohttp.WSMsgType.CLOSE,
                            aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR,
                        ):
                            break
                ws_closed = time.monotonic() - dropped

            # New requests fail fast with 502 naming the backend.
            for url in (kernel_url, base + "api/contents", kernel_url):
                answer = await call(client, "GET", url, timeout=FAIL_BOUND)
                assert_502(answer)
                assert answer.seconds < FAIL_BOUND, answer.seconds
            entry = await gpu_status(client, base)
            assert entry["reachable"] is False and entry["error"], entry
            first_502 = time.monotonic() - dropped
            await asyncio.sleep(2)  # down for a while: the relay backs off meanwhile

            back = time.monotonic()
            await asyncio.to_thread(sshd.restart)  # returns once sshd listens
            listening = time.monotonic() - back
            recovered, failures = await wait_for_status(client, kernel_url, 200, RECOVERY_BOUND)
            for answer in failures:  # until it is back, every answer is the 502 JSON
                assert_502(answer)
            print(
                f"\nssh backend: websocket closed {ws_closed:.2f} s after sshd was killed; "
                f"502s within {first_502:.2f} s; "
                f"sshd restart -> first successful request: {recovered:.2f} s "
                f"after sshd listened ({listening:.2f} s to restart it), "
                f"{len(failures)} failed polls before; sshd was down {back - dropped:.1f} s"
            )

            # The same kernel, with its state, answers over a new websocket.
            assert await run_code(client, base, kernel_id, "print(x)") == "42"
            listed = await call(client, "GET", base + "api/kernels")
            assert kernel_id in {k["id"] for k in listed.body}, listed.text
            entry = await gpu_status(client, base)
            assert entry["reachable"] is True and entry["error"] is None, entry
        finally:
            if not sshd.running():
                sshd.restart()
            async with aiohttp.ClientSession(headers=remote.headers) as direct:
                await call(direct, "DELETE", f"{remote.base}api/kernels/{kernel_id}")


async def test_a_server_replaced_while_ssh_was_down_is_found_again(
    empty_sshd: Sshd, ssh_work: Path, client: aiohttp.ClientSession
) -> None:
    """A reconnection reuses the old server only if it still answers: here it is gone."""
    sshd = empty_sshd
    roots = []
    for tag in ("before", "after"):
        root = ssh_work / f"replaced-{tag}-{secrets.token_hex(2)}"
        root.mkdir()
        (root / f"{tag}.txt").write_text(tag)
        roots.append(root)
    first = start_remote_jupyter(sshd, roots[0])
    second: JupyterServer | None = None
    try:
        async with ssh_relay(sshd.backend_arg()) as relay:
            assert "before.txt" in await content_names(client, relay.base)
            await asyncio.to_thread(sshd.stop)
            first.stop()
            second = start_remote_jupyter(sshd, roots[1])
            await asyncio.to_thread(sshd.restart)
            url = relay.base + "api/contents"
            _, failures = await wait_for_status(client, url, 200, RECOVERY_BOUND)
            for answer in failures:
                assert_502(answer)
            assert "after.txt" in await content_names(client, relay.base)
    finally:
        first.stop()
        if second is not None:
            second.stop()


# --- 9. sshd refusing what the relay asks ----------------------------------------------


async def wait_for_message(
    session: aiohttp.ClientSession, url: str, text: str, bound: float = RECOVERY_BOUND
) -> Answer:
    """Poll `url` until its error message holds `text` (the relay retries meanwhile)."""

    async def says() -> Answer:
        answer = await call(session, "GET", url, timeout=FAIL_BOUND)
        assert text in answer.text, (answer.status, answer.text[:300])
        return answer

    return await eventually(says, timeout=bound, interval=0.1, what=f"{url} says {text!r}")


async def test_sshd_refusing_sessions_is_a_502_then_recovers(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """ChannelOpenError at start-up and in the reconnect loop: named, survived, retried."""
    sshd = live_sshd
    await asyncio.to_thread(sshd.reconfigure, "MaxSessions 0\n")
    async with ssh_relay(sshd.backend_arg()) as relay:  # starts, does not crash
        url = relay.base + "api/contents"
        answer = await call(client, "GET", url, timeout=FAIL_BOUND)
        message = assert_502(answer, r"refused to open a channel", r"looking for the Jupyter")
        assert "\n" not in message
        progress = "\n".join(relay.progress)
        assert f"backend '{GPU}': the SSH server" in progress, progress
        # The reconnect loop meets the same refusal, and goes on.
        answer = await wait_for_message(client, url, "attempt 2")
        assert_502(answer, r"refused to open a channel")
        entry = await gpu_status(client, relay.base)
        assert entry["reachable"] is False and "refused" in entry["error"], entry

        await asyncio.to_thread(sshd.reconfigure, "")
        _, failures = await wait_for_status(client, url, 200, RECOVERY_BOUND)
        for failed in failures:
            assert_502(failed)


async def test_sshd_dying_after_a_good_connection_then_refusing_sessions(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """The reconnect loop started by a lost connection survives sshd refusing it.

    No channel to the old server either (PermitOpen none), so the relay cannot take the
    shortcut of reusing it and must list the servers again: a session, refused.
    """
    sshd = live_sshd
    async with ssh_relay(sshd.backend_arg()) as relay:
        url = relay.base + "api/contents"
        assert (await call(client, "GET", url)).status == 200
        await asyncio.to_thread(sshd.reconfigure, "MaxSessions 0\nPermitOpen none\n")
        await wait_for_message(client, url, "refused to open a channel")
        await wait_for_message(client, url, "attempt 2")
        await asyncio.to_thread(sshd.reconfigure, "")
        await wait_for_status(client, url, 200, RECOVERY_BOUND)


async def test_a_request_during_a_reconnect_attempt_is_not_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wake that comes while an attempt runs starts the next one at once, not after backoff.

    The attempts are stand-ins: the point is the order of events, which a real sshd
    cannot be made to hit on cue.
    """
    monkeypatch.setattr(ssh_backend, "BACKOFF_FIRST", 1000.0)  # no retry without a wake
    backend = SshBackend(parse_backend("gpu=ssh://gpu-box"), Timeouts())
    attempts: list[float] = []
    second = asyncio.Event()

    async def attempt(progress: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            # A second into this attempt, a request comes: the backend is down, and says so.
            backend._last_attempt -= MIN_SPACING
            with pytest.raises(BackendUnreachable):
                backend.upstream()
        else:
            second.set()
        raise BackendUnreachable("gpu", "backend 'gpu': sshd is not there")

    monkeypatch.setattr(backend, "_establish", attempt)
    backend._wake.set()  # the first attempt at once
    task = asyncio.create_task(backend._reconnect())
    try:
        async with asyncio.timeout(10):
            await second.wait()
    finally:
        backend._stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(attempts) == 2


async def test_sshd_forbidding_channels_to_the_jupyter_is_named(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """Requests ride direct-tcpip channels: an sshd that forbids them gets a 502 that says so."""
    sshd = live_sshd
    await asyncio.to_thread(sshd.reconfigure, "PermitOpen none\n")
    async with ssh_relay(sshd.backend_arg()) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        refused = rf"refused a channel to the Jupyter at \S+:{remote.port}\b"
        assert_502(answer, refused, "AllowTcpForwarding, PermitOpen")
        await asyncio.to_thread(sshd.reconfigure, "")
        await wait_for_status(client, relay.base + "api/contents", 200, RECOVERY_BOUND)


# --- 10. what the ssh config says ---------------------------------------------------------


def session_processes(sshd: Sshd) -> list[psutil.Process]:
    """sshd's per-connection processes (not the listener): what serves live sessions."""
    assert sshd.proc is not None
    return [
        p
        for p in psutil.Process(sshd.proc.pid).children(recursive=True)
        if p.name().startswith("sshd")
    ]


async def test_server_alive_settings_of_the_ssh_config_detect_a_dead_connection(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """ServerAliveInterval 1, ServerAliveCountMax 2: a frozen sshd is noticed within ~3 s."""
    sshd = live_sshd
    interval, count = 1, 2
    config = sshd.client_config(
        "alive", extra=f"    ServerAliveInterval {interval}\n    ServerAliveCountMax {count}\n"
    )
    async with ssh_relay(sshd.backend_arg(ssh_config=config)) as relay:
        assert (await call(client, "GET", relay.base + "api/status")).status == 200
        backend = relay.running.relay.backends[GPU]
        frozen = session_processes(sshd)
        assert frozen, "no sshd session process to freeze"
        stopped = time.monotonic()
        for proc in frozen:
            proc.suspend()  # SIGSTOP: the TCP connection stays up, nothing answers on it
        try:
            bound = interval * (count + 1) + 2.0  # asyncssh gives up after count+1 intervals
            await eventually(  # _down: what upstream() reports
                lambda: getattr(backend, "_down", None) is not None,
                timeout=bound - (time.monotonic() - stopped),
                what="the dead connection noticed",
            )
            noticed = time.monotonic() - stopped
        finally:
            for proc in frozen:
                with contextlib.suppress(psutil.Error):
                    proc.resume()
        print(f"\nfrozen sshd noticed after {noticed:.2f} s (bound {bound:g} s)")
        assert noticed >= interval * count - 0.5, noticed  # the keepalives, not something else
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        if answer.status != 200:  # reconnecting meanwhile is fine; a hang is not
            assert_502(answer)
        await wait_for_status(client, relay.base + "api/contents", 200, RECOVERY_BOUND)


async def test_a_missing_identity_file_is_skipped_as_ssh_does(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    missing = sshd.dir / "no-such-key"
    # First a key file that is not there, then the real one: ssh skips the first.
    first = sshd.client_config("missing-first", identity=missing)
    with first.open("a") as out:
        out.write(f"    IdentityFile {sshd.user_key}\n")
    assert sshd.ssh("true", ssh_config=first).returncode == 0
    async with ssh_relay(sshd.backend_arg(ssh_config=first)) as relay:
        assert REMOTE_FILE in await content_names(client, relay.base)
    # Only a missing key: refused as a login, not "cannot connect (No such file...)".
    only = sshd.client_config("missing-only", identity=missing)
    async with ssh_relay(sshd.backend_arg(ssh_config=only)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        message = assert_502(answer, r"refused|denied")
        assert "No such file" not in message, message


async def test_a_missing_known_hosts_file_is_skipped_as_ssh_does(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    missing = sshd.dir / "no-such-known-hosts"
    both = sshd.client_config("kh-missing-first", known_hosts=Path(f"{missing} {sshd.known_hosts}"))
    assert sshd.ssh("true", ssh_config=both).returncode == 0
    async with ssh_relay(sshd.backend_arg(ssh_config=both)) as relay:
        assert REMOTE_FILE in await content_names(client, relay.base)
    only = sshd.client_config("kh-missing-only", known_hosts=missing)
    async with ssh_relay(sshd.backend_arg(ssh_config=only)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        message = assert_502(answer, r"host key", r"never accepts a key silently")
        assert "No such file" not in message, message


@pytest.mark.parametrize("setting", ["none", "/dev/null"])
async def test_known_hosts_none_or_dev_null_is_not_a_way_to_accept_any_key(
    setting: str, sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    tag = "kh-" + setting.strip("/").replace("/", "-")
    config = sshd.client_config(tag, known_hosts=Path(setting))
    async with ssh_relay(sshd.backend_arg(ssh_config=config)) as relay:
        answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
        message = assert_502(answer, r"never accepts a key silently", rf"'ssh {sshd.alias}'")
        if setting == "none":
            assert "UserKnownHostsFile none" in message, message
        assert "\n" not in message


def fake_jupyter(sshd: Sshd, name: str, body: str) -> Path:
    """A `jupyter` for the "remote" that behaves as `body` (sh) says."""
    path = sshd.dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_tokens_in_remote_output_are_not_shown(
    sshd: Sshd,
    remote: JupyterServer,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing remote Jupyter's output, quoted in errors, has its token blanked."""
    # The background retries log each attempt at DEBUG (a failure like the last is no news).
    caplog.set_level(logging.DEBUG, logger="jupyter_relay.ssh")
    secret = secrets.token_hex(16)
    printed = (
        f'echo "    http://127.0.0.1:8888/lab?token={secret}" >&2\n'
        f'echo "Authorization: token {secret}" >&2\n'
    )
    # `jupyter server list` fails, saying the URL with its token.
    failing_list = fake_jupyter(sshd, "jupyter-list-fails", printed + "exit 2\n")
    # No server runs; the one started prints its URL and dies.
    dying = fake_jupyter(
        sshd,
        "jupyter-start-dies",
        '[ "$2" = list ] && exit 0\n' + printed.replace(" >&2", "") + "exit 1\n",
    )
    for jupyter, start, says in ((failing_list, "false", "list"), (dying, "true", "log")):
        caplog.clear()
        async with ssh_relay(sshd.backend_arg(jupyter=str(jupyter), start=start)) as relay:
            answer = await call(client, "GET", relay.base + "api/contents", timeout=START_BOUND)
            message = assert_502(answer, says, r"token")
            assert secret not in answer.text and secret not in relay.said, message
            await wait_for_log_record(caplog, "attempt")
            assert secret not in caplog.text
    assert "token=***" in message or "token ***" in message, message


async def wait_for_log_record(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """The reconnect loop has logged `text` (it quotes the remote's output too)."""
    await eventually(
        lambda: text in caplog.text, timeout=RECOVERY_BOUND, what=f"{text!r} in the log"
    )


# --- 11. passwords ------------------------------------------------------------------------


def relay_on_a_terminal(args: list[str], home: Path) -> pexpect.spawn:
    """`jupyter-relay` with a pseudo-terminal as its terminal, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK",)}
    env.update({"HOME": str(home), "JUPYTER_CONFIG_DIR": "/nonexistent"})
    return pexpect.spawn(
        str(BIN / "jupyter-relay"),
        ["--port", "0", "--token", RELAY_TOKEN, *args],
        env=env,
        encoding="utf-8",
        timeout=30,
    )


async def test_without_a_terminal_a_password_login_is_refused_in_one_line(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    async with password_sshd(tmp_path) as server:
        home = tmp_path / "home"
        home.mkdir()
        proc = await asyncio.to_thread(
            start_relay_process,
            ["--port", "0", "--token", RELAY_TOKEN, "--backend", server.backend_arg()],
            tmp_path,
            env={"HOME": str(home), "JUPYTER_CONFIG_DIR": "/nonexistent", "SSH_AUTH_SOCK": ""},
        )
        try:
            err = await asyncio.to_thread(wait_for_log, proc, r"refused")
            refused = [line for line in err.splitlines() if "refused" in line]
            assert any(
                f"backend '{GPU}'" in line and "only when the relay runs in a terminal" in line
                for line in refused
            ), err
            assert "Traceback" not in err and "password for" not in err, err
            answer = await call(client, "GET", proc.base + "api/contents", timeout=FAIL_BOUND)
            assert_502(answer, r"refused", r"terminal")
        finally:
            assert await asyncio.to_thread(proc.stop) == 0, proc.logs()


async def test_on_a_terminal_a_wrong_password_is_asked_again_and_slow_typing_is_waited_for(
    tmp_path: Path,
) -> None:
    """Wrong, then right after longer than --connect-timeout: logged in, nothing timed out."""
    async with password_sshd(tmp_path) as server:
        home = tmp_path / "home"
        home.mkdir()
        args = ["--connect-timeout", "1", "--backend", server.backend_arg()]
        child = relay_on_a_terminal(args, home)

        def converse() -> str:
            child.expect(r"password for \S*pwbox: ")
            child.sendline("a wrong password")
            child.expect(r"password for \S*pwbox: ")  # asked again, not the wrong one resent
            time.sleep(2.5)  # a user typing slowly: longer than the connect timeout
            child.sendline(PASSWORD)
            child.expect(r"no Jupyter server runs on \S*pwbox")  # logged in: it looked
            return str(child.before) + str(child.after)

        try:
            said = await asyncio.to_thread(converse)
        finally:
            child.terminate(force=True)
        assert "in time" not in said, said
        assert PASSWORD not in said, said


# --- 12. a request in flight, which server, older Jupyters ------------------------------


async def test_a_request_in_flight_when_ssh_drops_is_a_502_naming_the_backend(
    live_sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """The remote Jupyter is frozen, so the request waits for its answer; then sshd dies."""
    sshd = live_sshd
    async with ssh_relay(sshd.backend_arg()) as relay:
        assert not clients_of(remote.port)
        jupyter = psutil.Process(remote.proc.pid)
        jupyter.suspend()
        try:
            pending = asyncio.create_task(
                call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
            )
            await eventually(
                lambda: clients_of(remote.port),
                timeout=FAIL_BOUND,
                interval=0.02,
                what="the request rides a channel to the remote Jupyter",
            )
            assert not pending.done()
            await asyncio.to_thread(sshd.stop)
            answer = await pending
        finally:
            jupyter.resume()
        message = assert_502(answer)
        assert f"backend '{GPU}'" in message, message


async def test_several_servers_the_pick_is_said_and_jupyter_port_chooses(
    sshd: Sshd, remote: JupyterServer, ssh_work: Path, client: aiohttp.ClientSession
) -> None:
    root = ssh_work / f"second-root-{secrets.token_hex(2)}"
    root.mkdir()
    (root / "only-in-the-second.txt").write_text("second\n")
    second = start_remote_jupyter(sshd, root)
    try:
        assert len(runtime_servers(sshd)) == 2
        async with ssh_relay(sshd.backend_arg()) as relay:
            said = relay.said
            picked = re.search(r"2 Jupyter servers run on \S+; using port (\d+)", said)
            assert picked, said
            other = {remote.port, second.port} - {int(picked.group(1))}
            assert re.search(rf"others: port {other.pop()}\b", said), said
            assert "?jupyter_port=" in said, said
        async with ssh_relay(sshd.backend_arg(jupyter_port=str(second.port))) as relay:
            assert "only-in-the-second.txt" in await content_names(client, relay.base)
            assert re.search(rf"\bport {second.port}\b", relay.said), relay.said
            assert "Jupyter servers run on" not in relay.said, relay.said
        async with ssh_relay(sshd.backend_arg(jupyter_port=str(remote.port))) as relay:
            assert REMOTE_FILE in await content_names(client, relay.base)
        wrong = free_port()
        async with ssh_relay(sshd.backend_arg(jupyter_port=str(wrong))) as relay:
            answer = await call(client, "GET", relay.base + "api/contents", timeout=FAIL_BOUND)
            assert_502(answer, rf"no Jupyter server on port {wrong}", r"jupyter_port=")
    finally:
        second.stop()


async def test_falls_back_to_jupyter_notebook_list(
    sshd: Sshd, remote: JupyterServer, client: aiohttp.ClientSession
) -> None:
    """A Jupyter without `jupyter server` (Notebook 6): `jupyter notebook list --json` answers."""
    old = fake_jupyter(
        sshd,
        "jupyter-notebook-only",
        'if [ "$1" = notebook ] && [ "$2" = list ]; then\n'
        f"    exec {BIN / 'jupyter'} server list --json\n"
        "fi\n"
        "echo \"Jupyter command 'jupyter-$1' not found.\" >&2\n"
        "exit 1\n",
    )
    assert "not found" in sshd.ssh(f"{old} server list --json").stderr
    async with ssh_relay(sshd.backend_arg(jupyter=str(old))) as relay:
        assert REMOTE_FILE in await content_names(client, relay.base)
        assert re.search(rf"\bport {remote.port}\b", relay.said), relay.said


# --- 13. the command ----------------------------------------------------------------------


def relay_command(args: list[str], workdir: Path) -> RelayProcess:
    return start_relay_process(
        ["--port", "0", "--token", RELAY_TOKEN, *args],
        workdir,
        env={"JUPYTER_CONFIG_DIR": "/nonexistent"},
    )


async def test_command_prints_progress_while_connecting(
    sshd: Sshd, remote: JupyterServer, ssh_work: Path, client: aiohttp.ClientSession
) -> None:
    proc = relay_command(["--backend", sshd.backend_arg()], ssh_work)
    try:
        err = proc.logs()
        lines = err.splitlines()
        connecting = [line for line in lines if re.search(r"connect", line, re.IGNORECASE)]
        assert connecting, err
        assert re.search(rf"\b{GPU}\b", connecting[0]) and "SSH" in connecting[0], err
        assert re.search(rf"127\.0\.0\.1:{sshd.port}\b|\b{sshd.alias}\b", connecting[0]), err
        assert [line for line in lines if re.search(rf"\bport {remote.port}\b", line)], err
        assert remote.token not in err
        assert REMOTE_FILE in await content_names(client, proc.base)
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0, proc.logs()


async def test_command_says_in_one_line_that_the_host_key_is_refused(
    sshd: Sshd, remote: JupyterServer, ssh_work: Path, client: aiohttp.ClientSession
) -> None:
    known_hosts = sshd.dir / "known_hosts-cli"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other_host_key(sshd, 'cli')}\n")
    config = sshd.client_config("cli", known_hosts=known_hosts)
    proc = relay_command(["--backend", sshd.backend_arg(ssh_config=config)], ssh_work)
    try:
        err = wait_for_log(proc, r"host key")
        refused = [line for line in err.splitlines() if "host key" in line.lower()]
        # One line says it all: which backend, that the key is refused, where to fix it.
        assert any(re.search(rf"\b{GPU}\b", line) and "known_hosts" in line for line in refused), (
            err
        )
        assert "Traceback" not in err, err
        answer = await call(client, "GET", proc.base + "api/contents", timeout=FAIL_BOUND)
        assert_502(answer, r"host key")
        assert proc.proc.poll() is None, err
    finally:
        assert proc.stop() == 0, proc.logs()
