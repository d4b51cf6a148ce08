"""JupyterLab's own `@jupyterlab/services` switches a session between backends.

The real `jupyter-relay` command mixes two Jupyter servers (`a`, the primary, and
`b`) and a Kernel Gateway (`eg`). Node runs tests/js/mixer_client.mjs twice, with
the relay stopped and a new one started on the same port in between:

- phase 1 lists the kernelspecs, starts a kernel on each backend by its mixed name
  and asks each where it runs, starts a notebook session on `python3` (a) and
  changes its kernel to `b--python3`;
- phase 2, against the new relay, finds the session by id, runs code on its b
  kernel and on phase 1's kernels, changes the session's kernel to `eg--python3`
  and back to `python3`, and shuts everything down.

Node stops at checkpoints (a JSON line on stdout, "continue" on stdin) so that the
test can check, with aiohttp against the relay, that the session is listed exactly
once under the id the client got first, with the kernel the client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RELAY_TOKEN, Mixed
from .needs import JS_DIR, need_node
from .servers import RelayProcess, start_relay_process
from .waiting import eventually

MIXER_CLIENT = JS_DIR / "mixer_client.mjs"
# One step of the node script (a kernel start plus an execution) on a busy 2-core machine.
STEP_TIMEOUT = 90.0
# How long a kernel replaced by a session's kernel change may take to go away.
SHUTDOWN_WAIT = 15.0
# backend -> the relay's name for its python3 kernelspec (a is the primary).
SPEC_OF = {"a": "python3", "b": "b--python3", "eg": "eg--python3"}

Checkpoint = Callable[[dict[str, Any]], Awaitable[None]]

pytestmark = pytest.mark.timeout(300)


def _collect_ids(value: Any, into: set[str]) -> None:
    """Every kernel or session id anywhere in a line the script printed (for the cleanup)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("id", "kernel_id", "session_id", "last_kernel_id") and isinstance(item, str):
                into.add(item)
            else:
                _collect_ids(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect_ids(item, into)


async def _run_phase(
    node: str,
    relay: RelayProcess,
    phase: int,
    checkpoints: dict[str, Checkpoint],
    seen: set[str],
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one phase of mixer_client.mjs; check the relay at each checkpoint; its result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    # The token in the environment, not argv: keep it out of `ps`.
    env["RELAY_TOKEN"] = RELAY_TOKEN
    env["MIXER_PHASE"] = str(phase)
    env["MIXER_CHECKPOINTS"] = "1"
    env["MIXER_TIMEOUT_MS"] = str(int(STEP_TIMEOUT * 1000))
    if state is not None:
        env["MIXER_STATE"] = json.dumps(state)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(MIXER_CLIENT),
        relay.base,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    # Drain stderr all along: the library logs every websocket it opens.
    stderr_task = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    results: list[dict[str, Any]] = []
    reached: list[str] = []

    def detail() -> str:
        err = stderr_task.result().decode(errors="replace") if stderr_task.done() else ""
        return (
            f"\nphase {phase} stdout: {lines}\nstderr: {err[-4000:]}\nrelay: {relay.logs()[-4000:]}"
        )

    try:
        while True:
            try:
                raw = await asyncio.wait_for(proc.stdout.readline(), STEP_TIMEOUT)
            except TimeoutError:
                raise AssertionError(
                    f"mixer_client.mjs printed nothing for {STEP_TIMEOUT} s{detail()}"
                ) from None
            if not raw:
                break
            line = raw.decode()
            lines.append(line.strip())
            message = json.loads(line)
            _collect_ids(message, seen)
            if "checkpoint" in message:
                reached.append(message["checkpoint"])
                check = checkpoints.get(message["checkpoint"])
                assert check is not None, f"unexpected checkpoint{detail()}"
                await check(message)
                proc.stdin.write(b"continue\n")
                await proc.stdin.drain()
            else:
                results.append(message)
        await asyncio.wait_for(proc.wait(), STEP_TIMEOUT)
        await stderr_task
    except BaseException:
        # The end of stdin makes the script shut down what it started and exit.
        proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 20)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
        raise
    assert proc.returncode == 0, f"mixer_client.mjs exited {proc.returncode}{detail()}"
    assert reached == list(checkpoints), f"checkpoints reached: {reached}{detail()}"
    assert len(results) == 1, f"expected one result line{detail()}"
    result = results[0]
    assert result["phase"] == phase and result["ok"] is True, detail()
    return result


async def _get(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return await resp.json()


async def _kernel_ids(client: aiohttp.ClientSession, relay: RelayProcess) -> list[str]:
    return [k["id"] for k in await _get(client, relay.base + "api/kernels")]


async def _check_session_listed(
    client: aiohttp.ClientSession,
    relay: RelayProcess,
    session_id: str,
    path: str,
    kernel_id: str,
    kernel_name: str,
    when: str,
) -> None:
    """GET /api/sessions lists the session once, under its first id, with this kernel."""
    sessions: list[dict[str, Any]] = await _get(client, relay.base + "api/sessions")
    here = [s for s in sessions if s["id"] == session_id or s["path"] == path]
    assert len(here) == 1, f"{when}: the session is listed {len(here)} times: {sessions}"
    listed = here[0]
    assert listed["id"] == session_id, f"{when}: the session's id changed: {listed}"
    assert listed["path"] == path, f"{when}: {listed}"
    assert listed["kernel"]["id"] == kernel_id, f"{when}: {listed}"
    assert listed["kernel"]["name"] == kernel_name, f"{when}: {listed}"
    # The kernel itself is listed once, under its mixed name.
    kernels: list[dict[str, Any]] = await _get(client, relay.base + "api/kernels")
    models = [k for k in kernels if k["id"] == kernel_id]
    assert len(models) == 1, f"{when}: kernel {kernel_id} is listed {len(models)} times: {kernels}"
    assert models[0]["name"] == kernel_name, f"{when}: {models[0]}"


async def _check_kernel_gone(
    client: aiohttp.ClientSession, relay: RelayProcess, kernel_id: str, when: str
) -> None:
    """A session's previous kernel is shut down on a kernel change (as jupyter_server does)."""

    async def gone() -> bool:
        ids = await _kernel_ids(client, relay)
        assert kernel_id not in ids, f"{when}: the replaced kernel {kernel_id} still runs: {ids}"
        return True

    await eventually(
        gone, timeout=SHUTDOWN_WAIT, interval=0.25, what=f"{when}: the replaced kernel gone"
    )


def _check_switch(step: dict[str, Any], session_id: str, backend: str) -> None:
    """A kernel change through the library: same session id, new kernel where asked."""
    name = SPEC_OF[backend]
    assert step["to"] == name, step
    assert step["patch_status"] == 200, step
    assert step["patch_session_id"] == session_id, f"the PATCH answered another session: {step}"
    assert step["patch_kernel"]["name"] == name, step
    assert step["before"]["id"] == step["after"]["id"] == session_id, step
    assert step["after"]["kernel_id"] == step["patch_kernel"]["id"], step
    assert step["after"]["kernel_id"] != step["before"]["kernel_id"], step
    assert step["after"]["kernel_name"] == name, step
    assert (step["status"], step["output"]) == ("ok", backend), f"ran on the wrong kernel: {step}"


async def _spec_display_names(mixed: Mixed) -> dict[str, str]:
    """The relay's expected kernelspec names and display names, from the backends themselves."""
    expected: dict[str, str] = {}
    for backend, base, token in (
        ("a", mixed.a.base, mixed.a.token),
        ("b", mixed.b.base, mixed.b.token),
        ("eg", mixed.eg.base, mixed.eg.token),
    ):
        async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as direct:
            specs = await _get(direct, base + "api/kernelspecs")
        for name, spec in specs["kernelspecs"].items():
            display = spec["spec"]["display_name"]
            if backend == "a":
                expected[name] = display
            else:
                expected[f"{backend}--{name}"] = f"{display} ({backend})"
    return expected


async def _cleanup(mixed: Mixed, ids: set[str], path: str | None) -> None:
    """Whatever a failed run left on the shared backends, deleted there directly."""
    for base, token in (
        (mixed.a.base, mixed.a.token),
        (mixed.b.base, mixed.b.token),
        (mixed.eg.base, mixed.eg.token),
    ):
        async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as direct:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                sessions = [f"api/sessions/{i}" for i in ids]
                async with direct.get(base + "api/sessions") as resp:
                    if resp.status == 200:
                        for s in await resp.json():
                            if s["id"] in ids or s.get("path") == path:
                                sessions.append(f"api/sessions/{s['id']}")
                for target in [*sessions, *(f"api/kernels/{i}" for i in ids)]:
                    async with direct.delete(base + target):
                        pass


async def test_services_switches_kernels_across_a_relay_restart(
    mixed: Mixed, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Specs, kernels on a, b and eg, and one session moved a -> b | restart | -> eg -> a."""
    node = need_node()
    expected_specs = await _spec_display_names(mixed)
    backend_args = [arg for b in mixed.backend_args for arg in ("--backend", b)]
    relay = await asyncio.to_thread(
        start_relay_process, ["--port", "0", "--token", RELAY_TOKEN, *backend_args], tmp_path
    )
    relays = [relay]
    seen: set[str] = set()
    session: dict[str, str] = {}  # what the client saw first: id and path

    async def kernels_started(message: dict[str, Any]) -> None:
        listed: list[dict[str, Any]] = await _get(client, relay.base + "api/kernels")
        for backend, kernel in message["kernels"].items():
            models = [k for k in listed if k["id"] == kernel["id"]]
            assert len(models) == 1, f"{backend}'s kernel listed {len(models)} times: {listed}"
            assert models[0]["name"] == SPEC_OF[backend], models[0]

    async def session_on_a(message: dict[str, Any]) -> None:
        started = message["session"]
        session.update(id=started["id"], path=started["path"])
        await _check_session_listed(
            client,
            relay,
            started["id"],
            started["path"],
            started["kernel_id"],
            "python3",
            "session started on a",
        )

    try:
        # Phase 1: specs, a kernel on each backend, a session moved from a to b.
        one = await _run_phase(
            node, relay, 1, {"kernels": kernels_started, "session-a": session_on_a}, seen
        )
        assert one["default_kernelspec"] == "python3", one
        assert {n: s["display_name"] for n, s in one["kernelspecs"].items()} == expected_specs
        for backend, name in SPEC_OF.items():
            assert one["kernelspecs"][name]["name"] == name, one["kernelspecs"]
            kernel = one["kernels"][backend]
            assert kernel["name"] == name, kernel
            assert (kernel["status"], kernel["output"]) == ("ok", backend), kernel
        session_id, path = one["session_id"], one["session_path"]
        assert (session_id, path) == (session["id"], session["path"]), one
        start = one["session_start"]
        assert start["kernel_name"] == "python3", start
        assert (start["status"], start["output"]) == ("ok", "a"), start
        to_b = one["switch_to_b"]
        _check_switch(to_b, session_id, "b")
        b_kernel = to_b["after"]["kernel_id"]
        # The library's own listing agrees: one session at the path, on the b kernel.
        assert one["listed"]["sessions_at_path"] == [{"id": session_id, "kernel_id": b_kernel}]
        await _check_session_listed(
            client, relay, session_id, path, b_kernel, "b--python3", "after the change to b"
        )
        await _check_kernel_gone(client, relay, start["kernel_id"], "after the change to b")

        # The restart: SIGTERM, then a new relay on the same port.
        assert await asyncio.to_thread(relay.stop) == 0, relay.logs()
        relay = await asyncio.to_thread(
            start_relay_process,
            ["--port", str(relay.port), "--token", RELAY_TOKEN, *backend_args],
            tmp_path,
        )
        relays.append(relay)
        assert relay.port == relays[0].port
        await _check_session_listed(
            client, relay, session_id, path, b_kernel, "b--python3", "after the relay restart"
        )

        current = {"kernel_id": b_kernel}

        async def reconnected(message: dict[str, Any]) -> None:
            view = message["session"]
            assert view["id"] == session_id, view
            assert (view["kernel_id"], view["kernel_name"]) == (b_kernel, "b--python3"), view
            assert (view["status"], view["output"]) == ("ok", "b"), view
            await _check_session_listed(
                client, relay, session_id, path, b_kernel, "b--python3", "reconnected"
            )

        def switched(backend: str) -> Checkpoint:
            async def check(message: dict[str, Any]) -> None:
                view = message["session"]
                when = f"after the change to {backend}"
                assert view["id"] == session_id, f"{when}: {view}"
                assert view["kernel_name"] == SPEC_OF[backend], f"{when}: {view}"
                await _check_session_listed(
                    client, relay, session_id, path, view["kernel_id"], SPEC_OF[backend], when
                )
                await _check_kernel_gone(client, relay, current["kernel_id"], when)
                current["kernel_id"] = view["kernel_id"]

            return check

        # Phase 2: the same session through the new relay, moved to eg and back to a.
        state = {
            "session_id": session_id,
            "session_path": path,
            "kernels": {backend: k["id"] for backend, k in one["kernels"].items()},
        }
        two = await _run_phase(
            node,
            relay,
            2,
            {
                "reconnected": reconnected,
                "session-eg": switched("eg"),
                "session-a": switched("a"),
            },
            seen,
            state,
        )
        assert two["found_by_id"]["id"] == session_id, two
        assert two["found_by_path"]["id"] == session_id, two
        assert two["found_by_id"]["kernel"]["id"] == b_kernel, two
        assert two["found_by_id"]["kernel"]["name"] == "b--python3", two
        assert two["session_id"] == session_id, two
        assert (two["reconnected"]["status"], two["reconnected"]["output"]) == ("ok", "b"), two
        # Phase 1's kernels on every backend are served by the new relay.
        for backend, name in SPEC_OF.items():
            kernel = two["kernels"][backend]
            assert kernel["id"] == state["kernels"][backend], kernel
            assert kernel["name"] == name, kernel
            assert (kernel["status"], kernel["output"]) == ("ok", backend), kernel
        _check_switch(two["switch_to_eg"], session_id, "eg")
        _check_switch(two["switch_to_a"], session_id, "a")
        assert two["last_kernel_id"] == two["switch_to_a"]["after"]["kernel_id"], two

        # All shut down: neither the library nor the relay lists any of it.
        after = two["listed_after_shutdown"]
        assert after["sessions_at_path"] == [], after
        assert not seen & {k["id"] for k in after["kernels"]}, after
        sessions: list[dict[str, Any]] = await _get(client, relay.base + "api/sessions")
        assert not [s for s in sessions if s["id"] == session_id or s["path"] == path], sessions
        assert not seen & set(await _kernel_ids(client, relay)), seen
    finally:
        for running in relays:
            await asyncio.to_thread(running.stop)
        await _cleanup(mixed, seen, session.get("path"))
