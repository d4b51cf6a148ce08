"""Each failure gets a clear answer, and the relay keeps serving afterwards.

Malformed HTTP from a client, a client that vanishes mid-download, TLS to a
backend (right CA, wrong CA, a certificate for another name), a backend that
is down and one that never answers: all against real servers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest
import trustme
from aiohttp import web

from jupyter_relay.server import RunningRelay

from .conftest import RELAY_TOKEN, start_relay
from .servers import JupyterServer, RelayProcess, start_jupyter
from .waiting import eventually, eventually_sync

MiB = 1024 * 1024
STATUS_400 = re.compile(rb"^HTTP/1\.[01] 400 [^\r\n]*\r\n")


async def get_json(client: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, object]]:
    async with client.get(url) as resp:
        body = await resp.text()
        return resp.status, resp.content_type, json.loads(body)


async def assert_serving(client: aiohttp.ClientSession, base_url: str) -> None:
    async with client.get(base_url + "api/contents") as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["type"] == "directory"


# --- malformed HTTP from a client -------------------------------------------------------

MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "binary junk": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "header without colon": b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColonHere\r\n\r\n",
    "absurd content-length": (
        b"POST /api/contents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 99999999999999999999999999999999\r\n\r\n"
    ),
    "negative content-length": (
        b"POST /api/contents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n"
    ),
    "content-length and chunked": (
        b"POST /api/contents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_gets_400(
    relay: RunningRelay, client: aiohttp.ClientSession, raw: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read(65536)
            while b"\r\n\r\n" not in answer:
                more = await reader.read(65536)
                if not more:
                    break
                answer += more
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert STATUS_400.match(answer), answer[:200]
    assert b"Traceback" not in answer
    await assert_serving(client, relay.base_url)


# --- a client that disconnects mid-download ---------------------------------------------


def backend_connections(pid: int, port: int) -> int:
    """ESTABLISHED TCP connections from process `pid` to loopback `port`."""
    return sum(
        1
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == port
    )


async def start_download(port: int, path: str, want: int) -> asyncio.StreamWriter:
    """Ask the relay for `path` on a raw socket, read `want` bytes, hand back the socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: token {RELAY_TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    got = b""
    async with asyncio.timeout(30):
        while len(got) < want:
            more = await reader.read(256 * 1024)
            assert more, f"relay closed early: {got[:300]!r}"
            got += more
    assert got.startswith(b"HTTP/1.1 200 "), got[:300]
    return writer


async def abandon_downloads(
    relay_proc: RelayProcess, jupyter: JupyterServer, clients: int = 3
) -> tuple[int, int, int]:
    """Start `clients` downloads of a large file, read a few MiB each, then drop them.

    Returns the relay's connections to the backend before, during and after (once back
    at the level before: that it is within 15 s is asserted here).
    """
    name = f"disconnect-{os.getpid()}.bin"
    path = jupyter.root / name
    with path.open("wb") as out:  # sparse: instant, and far larger than any buffer
        out.truncate(1024 * MiB)
    pid, port = relay_proc.proc.pid, jupyter.port
    try:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"token {RELAY_TOKEN}"}
        ) as client:
            await assert_serving(client, relay_proc.base)
        before = backend_connections(pid, port)
        writers = await asyncio.gather(
            *(start_download(relay_proc.port, f"/files/{name}", 4 * MiB) for _ in range(clients))
        )
        during = backend_connections(pid, port)
        for writer in writers:
            writer.transport.abort()

        def back_to_before() -> tuple[int] | None:
            after = backend_connections(pid, port)
            return None if after > before else (after,)  # a tuple: 0 is an answer too

        (after,) = await eventually(
            back_to_before,
            timeout=15,
            interval=0.1,
            what=f"connections to the backend back to {before} (during: {during})",
        )
        return before, during, after
    finally:
        path.unlink(missing_ok=True)


async def test_client_disconnect_mid_download(
    relay_proc: RelayProcess, jupyter: JupyterServer
) -> None:
    before, during, after = await abandon_downloads(relay_proc, jupyter, clients=3)
    assert during >= 3, f"expected 3 downloads in flight, saw {during} connections"
    assert after <= before, (
        f"{after} connections to the backend remain (before: {before}, during: {during})"
    )
    assert relay_proc.proc.poll() is None
    async with aiohttp.ClientSession(headers={"Authorization": f"token {RELAY_TOKEN}"}) as client:
        await assert_serving(client, relay_proc.base)


async def test_client_disconnect_is_not_an_error_in_the_log(
    relay_proc: RelayProcess, jupyter: JupyterServer
) -> None:
    seen = len(relay_proc.logs())
    await abandon_downloads(relay_proc, jupyter, clients=1)  # its backend connection closed
    # Then a request the relay logs (a 404 is logged at INFO): once its line is there, the
    # relay has got past the abandoned download, and anything it said of it is before.
    marker = f"/no-such-route-{os.getpid()}-{time.monotonic_ns()}"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"token {RELAY_TOKEN}"}) as client,
        client.get(relay_proc.base + marker.lstrip("/")) as resp,
    ):
        assert resp.status == 404, await resp.text()
    await eventually(
        lambda: f"{marker} 404" in relay_proc.logs()[seen:],
        timeout=10,
        what=f"the relay logs {marker} 404",
    )
    new = relay_proc.logs()[seen:]
    assert "Traceback" not in new, new[-3000:]
    assert "Error handling request" not in new, new[-3000:]


# --- TLS to a backend -------------------------------------------------------------------


@dataclass
class TlsBackends:
    ca_file: Path
    other_ca_file: Path
    by_ip: JupyterServer  # certificate for 127.0.0.1
    by_name: JupyterServer  # certificate for 'jupyterhub' only


def start_tls_jupyter(ca: trustme.CA, name: str, base: Path) -> JupyterServer:
    cert = ca.issue_cert(name)
    certfile, keyfile = base / f"{name}.crt", base / f"{name}.key"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    root = base / f"root-{name}"
    root.mkdir()
    server = start_jupyter(
        root,
        base,
        extra_args=(f"--ServerApp.certfile={certfile}", f"--ServerApp.keyfile={keyfile}"),
        scheme="https",
        wait_ready=False,
    )
    # start_jupyter's readiness check speaks plain HTTP: wait here over TLS.
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = False  # the CA is checked; the name is the point of other tests
    req = urllib.request.Request(
        f"{server.base}api/status", headers={"Authorization": f"token {server.token}"}
    )

    def answers() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"TLS jupyter exited: {server.log.read_text()[-2000:]}")
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return bool(resp.status == 200)

    try:
        eventually_sync(
            answers, timeout=60, interval=0.1, what="TLS jupyter answers", ignoring=(OSError,)
        )
    except AssertionError as exc:
        server.stop()
        raise RuntimeError(f"{exc}: {server.log.read_text()[-2000:]}") from exc
    return server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBackends]:
    base = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    other.cert_pem.write_to_path(str(base / "other-ca.pem"))
    by_ip = start_tls_jupyter(ca, "127.0.0.1", base)
    try:
        by_name = start_tls_jupyter(ca, "jupyterhub", base)
    except BaseException:
        by_ip.stop()
        raise
    yield TlsBackends(base / "ca.pem", base / "other-ca.pem", by_ip, by_name)
    by_ip.stop()
    by_name.stop()


@contextlib.asynccontextmanager
async def relay_for(backend: str, **flags: str) -> AsyncIterator[RunningRelay]:
    running = await start_relay([backend], **flags)
    try:
        yield running
    finally:
        await running.stop()


async def test_tls_ca_in_backend_uri(tls: TlsBackends, client: aiohttp.ClientSession) -> None:
    backend = f"lab={tls.by_ip.backend_arg}&ca_cert={tls.ca_file}"
    async with relay_for(backend) as running:
        await assert_serving(client, running.base_url)
        async with client.get(running.base_url + "api/kernelspecs") as resp:
            assert resp.status == 200
            assert "python3" in (await resp.json())["kernelspecs"]


async def test_tls_ca_flag(tls: TlsBackends, client: aiohttp.ClientSession) -> None:
    async with relay_for(f"lab={tls.by_ip.backend_arg}", ca_cert=str(tls.ca_file)) as running:
        await assert_serving(client, running.base_url)


async def test_tls_wrong_ca_is_502_naming_verification(
    tls: TlsBackends, client: aiohttp.ClientSession
) -> None:
    async with relay_for(f"lab={tls.by_ip.backend_arg}", ca_cert=str(tls.other_ca_file)) as r:
        status, content_type, body = await get_json(client, r.base_url + "api/contents")
    assert status == 502
    assert content_type == "application/json"
    assert set(body) == {"message", "reason"}
    message = str(body["message"])
    assert "certificate verify failed" in message or "unable to get local issuer" in message
    assert "--ca-cert" in message and "--tls-server-name" not in message
    assert "'lab'" in message


async def test_tls_server_name_override(tls: TlsBackends, client: aiohttp.ClientSession) -> None:
    backend = f"lab={tls.by_name.backend_arg}&ca_cert={tls.ca_file}&tls_server_name=jupyterhub"
    async with relay_for(backend) as running:
        await assert_serving(client, running.base_url)
    flags = {"ca_cert": str(tls.ca_file), "tls_server_name": "jupyterhub"}
    async with relay_for(f"lab={tls.by_name.backend_arg}", **flags) as running:
        await assert_serving(client, running.base_url)


async def test_tls_name_mismatch_is_502(tls: TlsBackends, client: aiohttp.ClientSession) -> None:
    async with relay_for(f"lab={tls.by_name.backend_arg}", ca_cert=str(tls.ca_file)) as r:
        status, _, body = await get_json(client, r.base_url + "api/contents")
    assert status == 502
    assert body["reason"] == "Backend TLS Verification Failed"
    message = str(body["message"])
    assert "mismatch" in message
    assert "127.0.0.1" in message
    assert "--tls-server-name" in message
    assert "--ca-cert" not in message and ".." not in message


# --- a backend that is down or slow -----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_backend_down_json_and_html(client: aiohttp.ClientSession) -> None:
    port = closed_port()
    async with relay_for(f"lab=http://127.0.0.1:{port}/?token=abc") as running:
        status, content_type, body = await get_json(client, running.base_url + "api/kernels")
        assert status == 502
        assert content_type == "application/json"
        assert set(body) == {"message", "reason"}
        assert "'lab'" in str(body["message"])
        assert str(port) in str(body["message"])
        assert body["reason"] == "Backend Unreachable"

        async with client.get(running.base_url + "tree", headers={"Accept": "text/html"}) as resp:
            page = await resp.text()
            assert resp.status == 502
            assert resp.content_type == "text/html"
        assert page.lstrip().lower().startswith("<!doctype html>")
        assert "&#x27;lab&#x27;" in page or "'lab'" in page
        assert "abc" not in page  # the backend's token is not echoed


@pytest.fixture
async def slow_backend() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A real HTTP server whose /api/slow answers only when released."""
    release = asyncio.Event()

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"started": "now"})

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await release.wait()
        return web.json_response({"late": True})

    app = web.Application()
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, release
    finally:
        release.set()
        await runner.cleanup()


async def test_backend_timeout_is_504(
    slow_backend: tuple[int, asyncio.Event], client: aiohttp.ClientSession
) -> None:
    port, _ = slow_backend
    async with relay_for(f"slow=http://127.0.0.1:{port}/", backend_timeout="0.5") as running:
        started = time.monotonic()
        status, content_type, body = await get_json(client, running.base_url + "api/slow")
        elapsed = time.monotonic() - started
        assert status == 504
        assert content_type == "application/json"
        assert set(body) == {"message", "reason"}
        assert "'slow'" in str(body["message"])
        assert body["reason"] == "Backend Timeout"
        assert elapsed < 5, f"answered after {elapsed:.1f} s"
        status, _, body = await get_json(client, running.base_url + "api/status")
        assert status == 200
        assert body == {"started": "now"}


async def test_slow_upload_is_not_a_backend_timeout(
    jupyter: JupyterServer, client: aiohttp.ClientSession
) -> None:
    name = f"slow-upload-{os.getpid()}.txt"
    parts = [f"part {i}\n".encode() * 300 for i in range(6)]  # 2100 bytes: a multiple of 3

    async def body() -> AsyncIterator[bytes]:
        yield b'{"type": "file", "format": "base64", "content": "'
        for part in parts:
            yield base64.b64encode(part)
            await asyncio.sleep(0.4)  # a slow link: 2.4 s in all, timeout 1 s
        yield b'"}'

    try:
        # shutdown_timeout: after a 504 mid-upload, aiohttp lingers on the unread body.
        flags = {"backend_timeout": "1", "shutdown_timeout": "1"}
        async with relay_for(f"lab={jupyter.backend_arg}", **flags) as running:
            async with client.put(running.base_url + f"api/contents/{name}", data=body()) as resp:
                text = await resp.text()
                assert resp.status == 201, text
            assert (jupyter.root / name).read_bytes() == b"".join(parts)
    finally:
        (jupyter.root / name).unlink(missing_ok=True)


async def test_websocket_to_a_backend_that_is_down_is_502(client: aiohttp.ClientSession) -> None:
    port = closed_port()
    running = await start_relay([f"lab=http://127.0.0.1:{port}/"])
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            kernel = "6e8a4c0e-1f7b-4a8e-9d2c-3b5f7a9c1d2e"
            await client.ws_connect(running.base_url + f"api/kernels/{kernel}/channels")
        assert info.value.status == 502
        async with client.get(running.base_url + "api/kernels") as resp:
            body = await resp.json()
        assert f"127.0.0.1:{port} is unreachable (Connection refused)" in body["message"]
    finally:
        await running.stop()
