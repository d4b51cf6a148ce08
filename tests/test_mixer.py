"""The kernel mixer over real backends: two Jupyter servers (a, b) and a Kernel Gateway (eg).

Happy paths through the relay's REST API and kernel websockets: merged specs
and their logos, kernels on each backend running code (v1 and legacy
protocols), sessions moved between backends keeping their id across relay
restarts, a relay with only a gateway, and the Go mixer's `token` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jupyter_relay.server import RunningRelay

from .conftest import RELAY_TOKEN, Mixed, start_relay
from .kernel_client import V1, execute, run_code, start_kernel
from .servers import start_relay_process
from .waiting import eventually

WHERE = 'import os; print(os.environ["RELAY_TEST_BACKEND"])'
NAMES = {"a": "python3", "b": "b--python3", "eg": "eg--python3"}


@pytest.fixture
async def relay(mixed: Mixed) -> AsyncIterator[RunningRelay]:
    running = await start_relay(mixed.backend_args, list_timeout="5")
    yield running
    await running.stop()


async def get_json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def send_json(
    client: aiohttp.ClientSession, method: str, url: str, body: Any, status: int = 200
) -> Any:
    async with client.request(method, url, json=body) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json() if resp.status != 204 else None


async def run_on(
    client: aiohttp.ClientSession, relay: RunningRelay, kernel_id: str, protocol: str | None = V1
) -> str:
    url = f"{relay.base_url}api/kernels/{kernel_id}/channels?session_id=test-client"
    async with client.ws_connect(url, protocols=(protocol,) if protocol else ()) as ws:
        out, reply = await asyncio.wait_for(execute(ws, WHERE), 60)
    assert reply["content"]["status"] == "ok", reply
    return out.strip()


def backend_bytes(base: str, token: str, path: str) -> bytes:
    request = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        data: bytes = resp.read()
        return data


async def test_kernelspecs_merged_named_and_served(
    relay: RunningRelay, client: aiohttp.ClientSession, mixed: Mixed
) -> None:
    listing = await get_json(client, relay.base_url + "api/kernelspecs")
    specs = listing["kernelspecs"]
    assert listing["default"] == "python3"
    assert {"python3", "b--python3", "eg--python3"} <= set(specs)
    assert specs["b--python3"]["spec"]["display_name"].endswith(" (b)")
    assert specs["eg--python3"]["spec"]["display_name"].endswith(" (eg)")
    direct_a = json.loads(backend_bytes(mixed.a.base, mixed.a.token, "api/kernelspecs"))
    assert specs["python3"] == direct_a["kernelspecs"]["python3"]  # the primary's, unchanged
    # Every field a backend sends is kept (the gateway's argv and metadata included).
    direct = json.loads(backend_bytes(mixed.eg.base, mixed.eg.token, "api/kernelspecs"))
    own = direct["kernelspecs"]["python3"]
    mixed_eg = specs["eg--python3"]
    assert set(own) == set(mixed_eg) and set(own["spec"]) == set(mixed_eg["spec"])
    assert mixed_eg["spec"]["argv"] == own["spec"]["argv"]
    # One spec by name, and its logo from the backend that owns it.
    one = await get_json(client, relay.base_url + "api/kernelspecs/eg--python3")
    assert one == mixed_eg
    logo_url = mixed_eg["resources"]["logo-64x64"]
    assert logo_url == "/kernelspecs/eg--python3/logo-64x64.png"
    async with client.get(relay.base_url + logo_url[1:]) as resp:
        assert resp.status == 200
        logo = await resp.read()
    assert logo == backend_bytes(
        mixed.eg.base, mixed.eg.token, "kernelspecs/python3/logo-64x64.png"
    )
    async with client.get(relay.base_url + "api/kernelspecs/nosuch--python3") as resp:
        assert resp.status == 404
        body = await resp.json()
    assert "a, b, eg" in body["message"]


async def test_kernels_on_every_backend_run_code_and_are_listed_once(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    started = {}
    for backend, name in NAMES.items():
        kernel = await send_json(
            client, "POST", relay.base_url + "api/kernels", {"name": name}, 201
        )
        assert kernel["name"] == name
        started[backend] = kernel["id"]
    try:
        for backend, kernel_id in started.items():
            assert await run_on(client, relay, kernel_id, V1) == backend
            assert await run_on(client, relay, kernel_id, None) == backend  # legacy protocol
        listed = await get_json(client, relay.base_url + "api/kernels")
        ids = [k["id"] for k in listed]
        assert len(ids) == len(set(ids))
        by_id = {k["id"]: k for k in listed}
        for backend, kernel_id in started.items():
            assert by_id[kernel_id]["name"] == NAMES[backend]
            one = await get_json(client, f"{relay.base_url}api/kernels/{kernel_id}")
            assert one["id"] == kernel_id and one["name"] == NAMES[backend]
        kernel_id = started["b"]
        async with client.post(f"{relay.base_url}api/kernels/{kernel_id}/interrupt") as resp:
            assert resp.status == 204
        restarted = await send_json(
            client, "POST", f"{relay.base_url}api/kernels/{kernel_id}/restart", {}
        )
        assert restarted["id"] == kernel_id and restarted["name"] == "b--python3"
        assert await run_on(client, relay, kernel_id) == "b"
    finally:
        for kernel_id in started.values():
            async with client.delete(f"{relay.base_url}api/kernels/{kernel_id}") as resp:
                assert resp.status == 204
    listed = await get_json(client, relay.base_url + "api/kernels")
    assert not set(started.values()) & {k["id"] for k in listed}


async def test_session_moves_between_backends_keeping_its_id_across_restarts(
    mixed: Mixed, client: aiohttp.ClientSession
) -> None:
    relay = await start_relay(mixed.backend_args)
    path = "moving.ipynb"
    body = {"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}
    try:
        session = await send_json(client, "POST", relay.base_url + "api/sessions", body, 201)
        sid = session["id"]
        kernels_used = [session["kernel"]["id"]]
        assert await run_on(client, relay, session["kernel"]["id"]) == "a"
        for step, name in enumerate(("eg--python3", "b--python3", "python3", "eg--python3")):
            url = f"{relay.base_url}api/sessions/{sid}"
            moved = await send_json(client, "PATCH", url, {"kernel": {"name": name}})
            assert moved["id"] == sid and moved["kernel"]["name"] == name
            assert moved["type"] == "notebook" and moved["path"] == path
            kernels_used.append(moved["kernel"]["id"])
            backend = name.partition("--")[0] if "--" in name else "a"
            assert await run_on(client, relay, moved["kernel"]["id"]) == backend
            if step % 2 == 0:  # a restart of the relay in the middle of the work
                await relay.stop()
                relay = await start_relay(mixed.backend_args)
            again = await get_json(client, f"{relay.base_url}api/sessions/{sid}")
            assert again["id"] == sid and again["kernel"]["id"] == moved["kernel"]["id"]
            listed = await get_json(client, relay.base_url + "api/sessions")
            assert [s["id"] for s in listed].count(sid) == 1
            assert not [s for s in listed if s["path"] == path and s["id"] != sid]
        # A rename where the session now lives (the gateway) and one on a Jupyter backend.
        renamed = await send_json(
            client, "PATCH", f"{relay.base_url}api/sessions/{sid}", {"path": "renamed.ipynb"}
        )
        assert renamed["id"] == sid and renamed["path"] == "renamed.ipynb"
        await send_json(
            client,
            "PATCH",
            f"{relay.base_url}api/sessions/{sid}",
            {"kernel": {"name": "b--python3"}},
        )
        renamed = await send_json(
            client, "PATCH", f"{relay.base_url}api/sessions/{sid}", {"path": "again.ipynb"}
        )
        assert renamed["id"] == sid and renamed["path"] == "again.ipynb"
        kernels_used.append(renamed["kernel"]["id"])
        # Every kernel a move left behind was shut down, as Jupyter does on a kernel change.
        running = {k["id"] for k in await get_json(client, relay.base_url + "api/kernels")}
        assert running & set(kernels_used) == {renamed["kernel"]["id"]}
        async with client.delete(f"{relay.base_url}api/sessions/{sid}") as resp:
            assert resp.status == 204
        async with client.get(f"{relay.base_url}api/sessions/{sid}") as resp:
            assert resp.status == 404
        running = {k["id"] for k in await get_json(client, relay.base_url + "api/kernels")}
        assert not running & set(kernels_used)
    finally:
        await relay.stop()


async def test_session_created_with_a_prefixed_kernel_lives_on_that_backend(
    relay: RunningRelay, client: aiohttp.ClientSession, mixed: Mixed
) -> None:
    body = {"path": "on-b.ipynb", "type": "notebook", "kernel": {"name": "b--python3"}}
    session = await send_json(client, "POST", relay.base_url + "api/sessions", body, 201)
    try:
        direct = json.loads(backend_bytes(mixed.b.base, mixed.b.token, "api/sessions"))
        assert session["id"] in {s["id"] for s in direct}
        assert session["kernel"]["name"] == "b--python3"
    finally:
        async with client.delete(f"{relay.base_url}api/sessions/{session['id']}") as resp:
            assert resp.status == 204


async def test_a_second_relay_serves_kernels_it_never_listed(
    relay: RunningRelay, client: aiohttp.ClientSession, mixed: Mixed
) -> None:
    kernel = await send_json(
        client, "POST", relay.base_url + "api/kernels", {"name": "b--python3"}, 201
    )
    beside = await start_relay(mixed.backend_args)
    try:
        assert not beside.relay.mixer.kernel_owner  # nothing learnt yet
        assert await run_on(client, beside, kernel["id"]) == "b"
        one = await get_json(client, f"{beside.base_url}api/kernels/{kernel['id']}")
        assert one["name"] == "b--python3"
    finally:
        await beside.stop()
        async with client.delete(f"{relay.base_url}api/kernels/{kernel['id']}") as resp:
            assert resp.status == 204


async def test_relay_with_only_a_gateway_serves_kernels_and_explains_the_rest(
    mixed: Mixed, client: aiohttp.ClientSession
) -> None:
    relay = await start_relay([f"eg={mixed.eg.backend_arg}"])
    try:
        specs = await get_json(client, relay.base_url + "api/kernelspecs")
        assert set(specs["kernelspecs"]) == {"eg--python3"} and specs["default"] == "eg--python3"
        kernel = await send_json(client, "POST", relay.base_url + "api/kernels", {}, 201)
        assert kernel["name"] == "eg--python3"
        assert await run_on(client, relay, kernel["id"]) == "eg"
        async with client.delete(f"{relay.base_url}api/kernels/{kernel['id']}") as resp:
            assert resp.status == 204
        async with client.get(relay.base_url + "api/contents") as resp:
            assert resp.status == 404
            body = await resp.json()
        assert (
            "only kernel backends (eg)" in body["message"] and "--backend local" in body["message"]
        )
        async with client.get(relay.base_url + "relay/healthz") as resp:
            assert resp.status == 200
    finally:
        await relay.stop()


async def test_the_go_mixers_token_header_is_accepted(relay: RunningRelay, mixed: Mixed) -> None:
    async with aiohttp.ClientSession() as anon:
        async with anon.get(
            relay.base_url + "api/kernelspecs", headers={"token": RELAY_TOKEN}
        ) as resp:
            assert resp.status == 200
        async with anon.get(relay.base_url + "api/kernelspecs", headers={"token": "wrong"}) as resp:
            assert resp.status == 403
        # Forwarded to the primary too (test_headers checks the header is not passed on).
        async with anon.get(
            relay.base_url + "api/contents/only-on-a.txt", headers={"token": RELAY_TOKEN}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["name"] == "only-on-a.txt"


async def test_status_names_each_backend_kind_and_list_problems(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    await get_json(client, relay.base_url + "api/kernels")
    status = await get_json(client, relay.base_url + "relay/api/status")
    kinds = {b["name"]: (b["kind"], b["reachable"], b["kernels_error"]) for b in status["backends"]}
    assert kinds == {
        "a": ("jupyter", True, None),
        "b": ("jupyter", True, None),
        "eg": ("gateway", True, None),
    }
    assert status["primary"] == "a"


async def kernel_ids(client: aiohttp.ClientSession, relay: RunningRelay) -> set[str]:
    return {k["id"] for k in await get_json(client, relay.base_url + "api/kernels")}


async def test_rename_racing_a_delete_is_404_json_not_500(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    before = await kernel_ids(client, relay)
    for round_ in range(3):
        path = f"race-{round_}.ipynb"
        body = {"path": path, "type": "notebook", "kernel": {"name": "eg--python3"}}
        session = await send_json(client, "POST", relay.base_url + "api/sessions", body, 201)
        url = f"{relay.base_url}api/sessions/{session['id']}"
        rename: dict[str, Any] = {"path": f"renamed-{round_}.ipynb"}
        if round_ == 2:  # a kernel change takes a kernel start's time: the widest race
            rename = {"kernel": {"name": "eg--python3"}}
        async with asyncio.TaskGroup() as group:
            patched = group.create_task(client.patch(url, json=rename))
            deleted = group.create_task(client.delete(url))
        async with patched.result() as resp:
            assert resp.status in (200, 404), await resp.text()
            if resp.status == 404:
                assert "does not exist" in (await resp.json())["message"]
        async with deleted.result() as resp:
            assert resp.status == 204, await resp.text()
        async with client.get(url) as resp:
            assert resp.status == 404
    assert await kernel_ids(client, relay) == before  # no kernel left behind


async def test_concurrent_moves_of_one_session_leave_one_kernel(
    relay: RunningRelay, client: aiohttp.ClientSession
) -> None:
    before = await kernel_ids(client, relay)
    body = {"path": "crowd.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    session = await send_json(client, "POST", relay.base_url + "api/sessions", body, 201)
    url = f"{relay.base_url}api/sessions/{session['id']}"
    try:
        targets = ("b--python3", "eg--python3", "python3", "eg--python3", "b--python3")
        moves = [send_json(client, "PATCH", url, {"kernel": {"name": n}}) for n in targets]
        answers = await asyncio.gather(*moves)
        assert {a["id"] for a in answers} == {session["id"]}
        final = await get_json(client, url)
        # Whichever move ran last holds, with the kernel it answered.
        last = next(a for a in answers if a["kernel"]["id"] == final["kernel"]["id"])
        assert final["kernel"]["name"] == last["kernel"]["name"]
        where = (
            final["kernel"]["name"].partition("--")[0] if "--" in last["kernel"]["name"] else "a"
        )
        listed = await get_json(client, relay.base_url + "api/sessions")
        assert [s["id"] for s in listed].count(session["id"]) == 1
        assert await kernel_ids(client, relay) - before == {final["kernel"]["id"]}
        assert await run_on(client, relay, final["kernel"]["id"]) == where
    finally:
        async with client.delete(url) as resp:
            assert resp.status == 204
    assert await kernel_ids(client, relay) == before


async def test_relays_sharing_a_state_dir_keep_each_others_gateway_sessions(
    mixed: Mixed, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    relays = [await start_relay(mixed.backend_args, state_dir=str(tmp_path)) for _ in "ab"]
    made: list[str] = []
    try:
        for n, relay in enumerate(relays):
            body = {
                "path": f"shared-{n}.ipynb",
                "type": "notebook",
                "kernel": {"name": NAMES["eg"]},
            }
            made.append(
                (await send_json(client, "POST", relay.base_url + "api/sessions", body, 201))["id"]
            )
        for relay in relays:  # each sees the other's at once
            listed = await get_json(client, relay.base_url + "api/sessions")
            assert set(made) <= {s["id"] for s in listed}
        # One relay ends a session: the other, asked for it by id, no longer has it.
        extra = {"path": "ended.ipynb", "type": "notebook", "kernel": {"name": NAMES["eg"]}}
        ended = await send_json(client, "POST", relays[0].base_url + "api/sessions", extra, 201)
        await get_json(client, f"{relays[1].base_url}api/sessions/{ended['id']}")
        async with client.delete(f"{relays[0].base_url}api/sessions/{ended['id']}") as resp:
            assert resp.status == 204
        async with client.get(f"{relays[1].base_url}api/sessions/{ended['id']}") as resp:
            assert resp.status == 404, await resp.text()
        for relay in relays:
            await relay.stop()
        relays = [await start_relay(mixed.backend_args, state_dir=str(tmp_path))]
        listed = await get_json(client, relays[0].base_url + "api/sessions")
        assert set(made) <= {s["id"] for s in listed}  # and both outlive a restart
        assert ended["id"] not in {s["id"] for s in listed}
        for session_id in made:
            async with client.delete(f"{relays[0].base_url}api/sessions/{session_id}") as resp:
                assert resp.status == 204
    finally:
        for relay in relays:
            await relay.stop()


async def test_relays_naming_a_gateway_differently_share_its_sessions(
    mixed: Mixed, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Sessions are matched to a gateway by its URL: `gw` here is `eg` there."""
    eg = await start_relay(mixed.backend_args, state_dir=str(tmp_path))
    # The same gateway under another name, its URL spelled without the trailing slash.
    url = mixed.eg.backend_arg.replace("/?token", "?token")
    gw = await start_relay([f"gw={url}"], state_dir=str(tmp_path))
    try:
        body = {"path": "named.ipynb", "type": "notebook", "kernel": {"name": NAMES["eg"]}}
        made = await send_json(client, "POST", eg.base_url + "api/sessions", body, 201)
        listed = await get_json(client, gw.base_url + "api/sessions")
        seen = {s["id"]: s for s in listed}
        assert made["id"] in seen, listed
        assert seen[made["id"]]["kernel"]["id"] == made["kernel"]["id"]
        assert seen[made["id"]]["kernel"]["name"] == "gw--python3"
        # And the other way: a session made through `gw` is listed through `eg`.
        other = {"path": "other.ipynb", "type": "notebook", "kernel": {"name": "gw--python3"}}
        theirs = await send_json(client, "POST", gw.base_url + "api/sessions", other, 201)
        assert theirs["id"] in {
            s["id"] for s in await get_json(client, eg.base_url + "api/sessions")
        }
        for session_id in (made["id"], theirs["id"]):
            async with client.delete(f"{gw.base_url}api/sessions/{session_id}") as resp:
                assert resp.status == 204
        left = {s["id"] for s in await get_json(client, eg.base_url + "api/sessions")}
        assert not left & {made["id"], theirs["id"]}
    finally:
        await eg.stop()
        await gw.stop()


async def test_session_map_forgets_sessions_ended_behind_the_relays_back(
    relay: RunningRelay, client: aiohttp.ClientSession, mixed: Mixed
) -> None:
    body = {"path": "forgotten.ipynb", "type": "notebook", "kernel": {"name": "b--python3"}}
    session = await send_json(client, "POST", relay.base_url + "api/sessions", body, 201)
    assert session["id"] in relay.relay.mixer.sessions
    headers = {"Authorization": f"token {mixed.b.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as direct,
        direct.delete(f"{mixed.b.base}api/sessions/{session['id']}") as resp,
    ):
        assert resp.status == 204
    listed = await get_json(client, relay.base_url + "api/sessions")
    assert session["id"] not in {s["id"] for s in listed}
    assert session["id"] not in relay.relay.mixer.sessions


async def test_the_issues_command_local_gpu_and_gateway(
    mixed: Mixed, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`jupyter-relay --backend local --backend gpu=http://...?token=... --backend
    eg=gateway+http://...`, the real command: the local Jupyter's specs unprefixed, the
    others "(gpu)" and "(eg)"; kernels on each run code, interrupt, restart and shut down;
    a notebook's session moves local -> gpu -> eg keeping its id."""
    args = ["--port", "0", "--token", RELAY_TOKEN, "--backend", "local"]
    args += ["--backend", f"gpu={mixed.b.backend_arg}", "--backend", f"eg={mixed.eg.backend_arg}"]
    proc = start_relay_process(args, tmp_path, env={"RELAY_TEST_BACKEND": "local"}, cwd=tmp_path)
    base = proc.base
    names = {"local": "python3", "b": "gpu--python3", "eg": "eg--python3"}
    started: dict[str, str] = {}
    try:
        specs = (await get_json(client, base + "api/kernelspecs"))["kernelspecs"]
        assert set(names.values()) <= set(specs), sorted(specs)
        assert specs["python3"]["spec"]["display_name"] == "Python 3 (ipykernel)"  # as it is
        assert specs["gpu--python3"]["spec"]["display_name"].endswith(" (gpu)")
        assert specs["eg--python3"]["spec"]["display_name"].endswith(" (eg)")
        for where, name in names.items():
            kernel = await send_json(client, "POST", base + "api/kernels", {"name": name}, 201)
            started[where] = kernel["id"]
            assert await run_code(client, base, kernel["id"], WHERE) == where
            async with client.post(f"{base}api/kernels/{kernel['id']}/interrupt") as resp:
                assert resp.status == 204, await resp.text()
            again = await send_json(client, "POST", f"{base}api/kernels/{kernel['id']}/restart", {})
            assert again["id"] == kernel["id"] and again["name"] == name
            assert await run_code(client, base, kernel["id"], WHERE) == where
        listed = [k["id"] for k in await get_json(client, base + "api/kernels")]
        assert sorted(set(listed) & set(started.values())) == sorted(started.values())
        assert len(listed) == len(set(listed))
        for kernel_id in started.values():
            async with client.delete(f"{base}api/kernels/{kernel_id}") as resp:
                assert resp.status == 204, await resp.text()
        started.clear()
        # A notebook switching its kernel between the three, as JupyterLab does it.
        note = {"path": "switch.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        session = await send_json(client, "POST", base + "api/sessions", note, 201)
        sid = session["id"]
        for where, name in (("b", "gpu--python3"), ("eg", "eg--python3"), ("local", "python3")):
            url = f"{base}api/sessions/{sid}"
            moved = await send_json(client, "PATCH", url, {"kernel": {"name": name}})
            assert moved["id"] == sid and moved["kernel"]["name"] == name, moved
            assert await run_code(client, base, moved["kernel"]["id"], WHERE) == where
        async with client.delete(f"{base}api/sessions/{sid}") as resp:
            assert resp.status == 204, await resp.text()
    finally:
        for kernel_id in started.values():
            async with client.delete(f"{base}api/kernels/{kernel_id}"):
                pass
        assert proc.stop() == 0, proc.logs()


async def test_a_kernel_websocket_is_tunnelled_before_its_owner_is_known(
    mixed: Mixed, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Right after a restart the relay knows no kernel's owner: the engine asks the
    mixer (every backend), then tunnels to the owner."""
    caplog.set_level(logging.DEBUG, logger="jupyter_relay.access")
    b = mixed.b  # not the primary (a): only asking every backend finds the kernel
    async with aiohttp.ClientSession(headers=b.headers) as direct:
        kernel_id = await start_kernel(direct, b.base)
        try:
            running = await start_relay(mixed.backend_args)
            try:
                assert await run_code(client, running.base_url, kernel_id, "print(6 * 7)") == "42"
                channels = f"/api/kernels/{kernel_id}/channels"

                def tunnelled() -> bool:
                    return any(
                        channels in r.getMessage() and "websocket closed" in r.getMessage()
                        for r in caplog.records
                    )

                # logged when the tunnel closes
                await eventually(tunnelled, timeout=10, what="the websocket tunnel closed")
                assert running.relay.mixer.kernel_owner[kernel_id] == "b"
            finally:
                await running.stop()
        finally:
            async with direct.delete(f"{b.base}api/kernels/{kernel_id}") as resp:
                assert resp.status == 204
