"""Host names through the allowlist: resolved once, and the addresses checked too.

The relay runs as the real command inside a private mount namespace whose /etc/hosts
is the test's (`unshare -m`, then `mount --bind`; the tests run as root), so that

    app.example.test, sneaky.example.test  -> 127.0.0.1
    far.example.test                       -> 10.9.8.7
    meta / aliyun-meta / shared / linklocal.example.test -> 169.254.169.254,
        100.100.100.200, 100.64.1.2, 169.254.7.7 (metadata and guarded blocks)

without touching the machine's resolver. A listed glob reaches an app by name when the
address is allowed too; a listed name that resolves to loopback while loopback is not
listed is refused without contact (DNS rebinding); a name not listed that resolves
outside every range is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from .echo_app import Echo, run_echo
from .proxying import PREFIX_HEADERS, Got, assert_json_error, fetch, proxy_command, seen, url
from .servers import RelayProcess
from .waiting import eventually
from .webapps import CountingListener, WebApp, run_webapp

JSON = {"Accept": "application/json"}
HOSTS = """\
127.0.0.1 localhost
127.0.0.1 app.example.test
127.0.0.1 sneaky.example.test
10.9.8.7 far.example.test
169.254.169.254 meta.example.test
100.100.100.200 aliyun-meta.example.test
100.64.1.2 shared.example.test
169.254.7.7 linklocal.example.test
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    return path


@pytest.fixture
async def backend() -> AsyncIterator[Echo]:
    async with run_echo() as echo:
        yield echo


@pytest.fixture
async def app() -> AsyncIterator[WebApp]:
    async with run_webapp() as state:
        yield state


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


@contextlib.asynccontextmanager
async def relay_with_hosts(
    backend: Echo,
    hosts: Path,
    workdir: Path,
    allow: list[str],
    env: dict[str, str] | None = None,
) -> AsyncIterator[RelayProcess]:
    args = ["--backend", f"lab=http://127.0.0.1:{backend.port}/"]
    for entry in allow:
        args += ["--proxy-allow", entry]
    proc = await asyncio.to_thread(proxy_command, args, workdir, hosts=hosts, env=env)
    try:
        yield proc
    finally:
        code = await asyncio.to_thread(proc.stop)
        assert code == 0, proc.logs()


async def test_a_listed_glob_reaches_the_app_by_name(
    backend: Echo, hosts: Path, tmp_path: Path, app: WebApp, client: aiohttp.ClientSession
) -> None:
    async with relay_with_hosts(backend, hosts, tmp_path, ["*.example.test", "loopback"]) as relay:
        for name in ("app.example.test", "APP.example.test"):
            prefix = f"/proxy/{name}:{app.port}"
            echo = seen(await fetch(client, "GET", url(relay.base, f"{prefix}/by/name?x=1")))
            assert (echo.path, echo.query) == ("/by/name", "x=1"), echo.raw
            # Host names are case-insensitive: the relay may send it lower-cased.
            assert (echo.header("Host") or "").lower() == f"{name.lower()}:{app.port}", echo.raw
            assert echo.prefix_headers() == dict.fromkeys(PREFIX_HEADERS, prefix), echo.raw
        echo = seen(
            await fetch(
                client, "GET", url(relay.base, f"/proxy/absolute/app.example.test:{app.port}/a")
            )
        )
        assert echo.path == f"/proxy/absolute/app.example.test:{app.port}/a", echo.raw
        async with client.ws_connect(
            url(relay.base, f"/proxy/app.example.test:{app.port}/_ws")
        ) as ws:
            await ws.send_str("by name")
            assert (await ws.receive(timeout=10)).data == "by name"


async def test_a_listed_name_resolving_to_loopback_is_refused_without_contact(
    backend: Echo,
    hosts: Path,
    tmp_path: Path,
    listener: CountingListener,
    client: aiohttp.ClientSession,
) -> None:
    """`*.example.test` listed, loopback not: names that resolve to 127.0.0.1 are refused."""
    port = listener.port
    async with relay_with_hosts(backend, hosts, tmp_path, ["*.example.test"]) as relay:
        for host in ("sneaky.example.test", "app.example.test", "localhost", "127.0.0.1"):
            got = await fetch(
                client, "GET", url(relay.base, f"/proxy/{host}:{port}/"), headers=JSON
            )
            assert_json_error(got, 403, host.replace(".", r"\."), "--proxy-allow")
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                async with client.ws_connect(url(relay.base, f"/proxy/{host}:{port}/_ws")):
                    pass
            assert caught.value.status == 403, (host, caught.value)
        assert await listener.settled() == 0, listener
    # Control: with loopback listed too, the same name reaches the same listener.
    async with relay_with_hosts(backend, hosts, tmp_path, ["*.example.test", "loopback"]) as relay:
        got = await fetch(
            client, "GET", url(relay.base, f"/proxy/sneaky.example.test:{port}/"), headers=JSON
        )
        assert got.status == 502, (got.status, got.text)
        await eventually(
            lambda: listener.count >= 1, timeout=10, what=f"a connection to {listener}"
        )


async def test_a_name_not_listed_resolving_outside_the_ranges_is_refused(
    backend: Echo, hosts: Path, tmp_path: Path, app: WebApp, client: aiohttp.ClientSession
) -> None:
    """The allowlist from JUPYTER_RELAY_PROXY_ALLOW: one exact name and loopback."""
    env = {"JUPYTER_RELAY_PROXY_ALLOW": "app.example.test,loopback"}
    async with relay_with_hosts(backend, hosts, tmp_path, [], env=env) as relay:
        got = await fetch(
            client, "GET", url(relay.base, "/proxy/far.example.test:80/"), headers=JSON
        )
        assert_json_error(got, 403, r"far\.example\.test", "--proxy-allow")
        assert got.seconds < 2, got.seconds  # refused, not tried and timed out
        echo = seen(
            await fetch(client, "GET", url(relay.base, f"/proxy/app.example.test:{app.port}/ok"))
        )
        assert echo.path == "/ok", echo.raw
        status = await fetch(client, "GET", url(relay.base, "/relay/api/status"))
        assert status.json["port_proxy"]["allow"] == ["app.example.test", "loopback"], status.text


async def test_names_resolving_to_metadata_or_guarded_blocks_are_refused_with_how_to_allow(
    backend: Echo, hosts: Path, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    """Listed by glob, and every address held by a wide range: still refused, quickly."""
    allow = ["*.example.test", "0.0.0.0/0"]
    cases = {
        "meta.example.test": ("metadata", r"--proxy-allow 169\.254\.169\.254(?! \()"),
        "aliyun-meta.example.test": ("metadata", r"--proxy-allow 100\.100\.100\.200"),
        "shared.example.test": (r"100\.64\.0\.0/10", r"--proxy-allow 100\.64\.1\.2"),
        "linklocal.example.test": ("link-local", r"--proxy-allow 169\.254\.0\.0/16"),
    }
    async with relay_with_hosts(backend, hosts, tmp_path, allow) as relay:
        for name, says in cases.items():
            got = await fetch(client, "GET", url(relay.base, f"/proxy/{name}:80/"), headers=JSON)
            assert_json_error(got, 403, name.replace(".", r"\."), *says)
            assert got.seconds < 2, (name, got.seconds)  # refused, not dialled


async def test_a_checked_resolution_is_reused_briefly_and_a_rebinding_never_dialled(
    backend: Echo, hosts: Path, tmp_path: Path, app: WebApp, client: aiohttp.ClientSession
) -> None:
    """The name resolves to the app, then (the attacker's DNS) to the metadata address.

    Within RESOLVE_TTL the relay dials the address it checked, not the new one; after
    it, the new answer is checked, and refused.
    """
    from jupyter_relay.proxy.core import RESOLVE_TTL

    allow = ["*.example.test", "127.0.0.1"]
    async with relay_with_hosts(backend, hosts, tmp_path, allow) as relay:
        target = url(relay.base, f"/proxy/app.example.test:{app.port}/x")
        assert seen(await fetch(client, "GET", target)).path == "/x"
        # Rewritten in place: the relay's private /etc/hosts is this file, bind-mounted.
        flipped_hosts = HOSTS.replace("127.0.0.1 app.", "169.254.169.254 app.")
        await asyncio.to_thread(hosts.write_text, flipped_hosts)
        flipped = asyncio.get_running_loop().time()
        got = await fetch(client, "GET", target)
        assert asyncio.get_running_loop().time() - flipped < RESOLVE_TTL, "too slow to tell"
        assert seen(got).path == "/x", "within the TTL: the checked address, not a lookup"

        async def refused() -> Got | None:
            got = await fetch(client, "GET", target, headers=JSON)
            return got if got.status != 200 else None

        got = await eventually(
            refused, timeout=RESOLVE_TTL + 10, interval=0.1, what="a lookup after the TTL"
        )
        assert_json_error(got, 403, "metadata", r"--proxy-allow 169\.254\.169\.254")
        assert len(app.requests) >= 2 and all(r["path"] == "/x" for r in app.requests)
