"""Listening: the server-info file `jupyter server list` reads, HTTPS (--certfile,
--keyfile) and a Unix socket (--sock), each with real clients (aiohttp, curl, jupyter)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme

from jupyter_relay.colab import AUTH_URL_PARAM

from . import kernel_client
from .colab_client import Reply, Target
from .conftest import RELAY_TOKEN, start_relay
from .echo_app import run_echo
from .servers import BIN, JupyterServer, RelayProcess, start_relay_process

UNREACHABLE = "x=http://127.0.0.1:9/"  # a backend that never answers: the relay serves anyway
AUTH = {"Authorization": f"token {RELAY_TOKEN}"}
NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


def server_list(runtime: Path) -> list[dict[str, Any]]:
    """What `jupyter server list --json` prints, one server a line."""
    done = subprocess.run(
        [str(BIN / "jupyter"), "server", "list", "--json"],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def stop(relay: RelayProcess, sig: int = signal.SIGTERM) -> None:
    assert relay.stop(sig) == 0, relay.logs()


# --- the server-info file -----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_jupyter_server_list_shows_the_relay_while_it_runs(tmp_path: Path, sig: int) -> None:
    runtime = tmp_path / "runtime"
    relay = start_relay_process(
        ["--backend", UNREACHABLE, "--port", "0"],
        tmp_path,
        env={"JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    try:
        info_file = runtime / f"jpserver-{relay.proc.pid}.json"
        assert stat.S_IMODE(info_file.stat().st_mode) == 0o600  # it holds the token
        [listed] = server_list(runtime)
        assert listed["url"] == f"http://127.0.0.1:{relay.port}/"
        assert (listed["port"], listed["pid"], listed["token"]) == (
            relay.port,
            relay.proc.pid,
            relay.token,
        )
        assert (listed["secure"], listed["sock"], listed["base_url"]) == (False, "", "/")
    finally:
        stop(relay, sig)
    assert not info_file.exists()
    assert server_list(runtime) == []


# --- HTTPS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: Path
    certfile: Path
    keyfile: Path
    combined: Path  # the key, then the chain: one file for --certfile alone

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("tls")
    files = Tls(where / "ca.pem", where / "cert.pem", where / "key.pem", where / "both.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(files.certfile), append=True)
    leaf.private_key_pem.write_to_path(str(files.keyfile))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(files.combined))
    return files


@pytest.fixture
async def trusting(tls: Tls) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that trusts the relay's CA, and no other; it keeps no cookies."""
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


async def curl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "30", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_https_serves_jupyters_api_and_kernels_and_the_cookie_is_secure(
    jupyter: JupyterServer, tls: Tls, trusting: aiohttp.ClientSession
) -> None:
    running = await start_relay(
        [f"lab={jupyter.backend_arg}"], certfile=str(tls.certfile), keyfile=str(tls.keyfile)
    )
    try:
        base = running.base_url
        assert base == f"https://127.0.0.1:{running.port}/"
        assert running.url == f"{base}?token={RELAY_TOKEN}"
        async with trusting.get(base + "api/kernelspecs", headers=AUTH) as resp:
            assert resp.status == 200
            assert "python3" in (await resp.json())["kernelspecs"]
        client = _authorized(trusting)
        kernel = await kernel_client.start_kernel(client, base)
        assert await kernel_client.run_code(client, base, kernel, "print(6*7)") == "42"
        async with trusting.delete(base + f"api/kernels/{kernel}", headers=AUTH) as resp:
            assert resp.status == 204
        # A browser opening the printed URL: redirected without the token, with a Secure cookie.
        async with trusting.get(
            base + f"lab?token={RELAY_TOKEN}", headers=NAVIGATION, allow_redirects=False
        ) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/lab"
            [cookie] = resp.headers.getall("Set-Cookie")
            assert cookie.startswith(running.relay.cookie_name + "=")
            assert "; Secure" in cookie and "HttpOnly" in cookie
        status = json.loads(
            await curl(
                "--cacert",
                str(tls.ca),
                "-H",
                f"Authorization: token {RELAY_TOKEN}",
                base + "relay/api/status",
            )
        )
        assert status["backends"][0]["name"] == "lab"
        # Only TLS is spoken, and only with that certificate.
        async with aiohttp.ClientSession() as stranger:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await stranger.get(base + "relay/healthz")
            with pytest.raises(aiohttp.ClientError):
                await stranger.get(f"http://127.0.0.1:{running.port}/relay/healthz")
    finally:
        await running.stop()


def _authorized(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """`session`, sending the relay's token with every request (kernel_client's calls)."""
    session.headers.update(AUTH)
    return session


async def test_https_tells_backends_the_client_came_over_https(
    tls: Tls, trusting: aiohttp.ClientSession
) -> None:
    async with run_echo() as echo:
        running = await start_relay([echo.backend_arg], certfile=str(tls.combined))
        try:
            async with trusting.get(running.base_url + "echo/x", headers=AUTH) as resp:
                headers = dict((await resp.json())["headers"])
            assert headers["X-Forwarded-Proto"] == "https"
            async with trusting.ws_connect(running.base_url + "ws", headers=AUTH) as ws:
                await ws.send_str("over tls")
                assert (await ws.receive_str()) == "over tls"
            assert dict(echo.requests[-1]["headers"])["X-Forwarded-Proto"] == "https"  # type: ignore[call-overload]
        finally:
            await running.stop()


def test_a_certificate_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    done = subprocess.run(
        [str(BIN / "jupyter-relay"), "--backend", UNREACHABLE, "--certfile", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JUPYTER_CONFIG_DIR": "/nonexistent"},
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"jupyter-relay: error: cannot serve HTTPS with --certfile {bad}")


# --- a Unix socket ------------------------------------------------------------------------


async def test_a_unix_socket_serves_aiohttp_and_curl_and_is_gone_after_stop(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "runtime"
    path = tmp_path / "relay.sock"
    async with run_echo() as echo:
        relay = await asyncio.to_thread(
            start_relay_process,
            ["--backend", echo.backend_arg, "--sock", str(path)],
            tmp_path,
            env={"JUPYTER_RUNTIME_DIR": str(runtime)},
        )
        try:
            assert relay.url == f"http+unix://{quote(str(path), safe='')}/?token={relay.token}"
            mode = path.stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            token = {"Authorization": f"token {relay.token}"}
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector) as client:
                async with client.get("http://localhost/echo/x", headers=token) as resp:
                    assert resp.status == 200
                    headers = dict((await resp.json())["headers"])
                    assert headers["X-Forwarded-Proto"] == "http"
                async with client.ws_connect("http://localhost/ws", headers=token) as ws:
                    await ws.send_str("over a unix socket")
                    assert (await ws.receive_str()) == "over a unix socket"
                async with client.get("http://localhost/echo/x") as resp:
                    assert resp.status == 403  # the gate, as on a port
            status = await curl(
                "--unix-socket", str(path), "-H", f"Authorization: token {relay.token}",
                "http://localhost/relay/api/status",
            )  # fmt: skip
            assert json.loads(status)["backends"][0]["name"] == "echo"
            [listed] = await asyncio.to_thread(server_list, runtime)
            assert (listed["sock"], listed["url"]) == (str(path), relay.url.partition("?")[0])
        finally:
            await asyncio.to_thread(stop, relay)
    assert not path.exists() and not path.is_symlink()
    assert await asyncio.to_thread(server_list, runtime) == []


@pytest.fixture
def listening_elsewhere(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "taken.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(1)
    yield path
    other.close()


def test_a_socket_in_use_or_a_file_in_the_way_is_refused_in_one_line(
    tmp_path: Path, listening_elsewhere: Path
) -> None:
    plain = tmp_path / "a-file"
    plain.write_text("mine")
    for path, words in (
        (listening_elsewhere, "another program listens on it"),
        (plain, "is not a socket"),
    ):
        done = subprocess.run(
            [str(BIN / "jupyter-relay"), "--backend", UNREACHABLE, "--sock", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "JUPYTER_CONFIG_DIR": "/nonexistent"},
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith(f"jupyter-relay: error: cannot listen on {path}: ") and words in line
    assert plain.read_text() == "mine"


async def test_a_socket_left_by_a_dead_relay_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nothing listens
    async with run_echo() as echo:
        running = await start_relay([echo.backend_arg], sock=str(path), port=None)
        try:
            connector = aiohttp.UnixConnector(path=str(path))
            async with (
                aiohttp.ClientSession(connector=connector) as client,
                client.get("http://localhost/echo/x", headers=AUTH) as resp,
            ):
                assert resp.status == 200 and (await resp.json())["raw_path"] == "/echo/x"
        finally:
            await running.stop()
    assert not path.exists()


# --- Colab's websocket bridge, whose inner requests dial the relay itself -----------------


async def bridge_echo(session: aiohttp.ClientSession, base: str) -> Reply:
    """One request through `/http_over_websocket`, authorized as Colab's page does it."""
    page = Target("relay", base, session, query={AUTH_URL_PARAM: f"{base}?token={RELAY_TOKEN}"})
    async with page.bridge() as sock:
        return await sock.request("GET", "/echo/colab")


async def test_colabs_bridge_over_https_and_over_a_unix_socket(
    tmp_path: Path, tls: Tls, trusting: aiohttp.ClientSession
) -> None:
    async with run_echo() as echo:
        over_tls = await start_relay([echo.backend_arg], certfile=str(tls.combined), colab="true")
        try:
            reply = await bridge_echo(trusting, over_tls.base_url)
        finally:
            await over_tls.stop()
        assert reply.status == 200, reply.describe()
        assert dict(reply.json()["headers"])["X-Forwarded-Proto"] == "https"
        path = tmp_path / "colab.sock"
        over_sock = await start_relay([echo.backend_arg], sock=str(path), port=None, colab="true")
        try:
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector) as client:
                reply = await bridge_echo(client, "http://localhost/")
        finally:
            await over_sock.stop()
        assert reply.status == 200, reply.describe()
        assert reply.json()["raw_path"] == "/echo/colab"
