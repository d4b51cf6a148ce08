"""The `jupyter-relay` command as a user runs it: help, errors, the local backend."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from jupyter_relay.cli import main

from .servers import BIN, JupyterServer, RelayProcess, _child_env, start_relay_process
from .waiting import eventually_sync


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "jupyter-relay"), *args],
        capture_output=True,
        text=True,
        env=_child_env(env),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_help_lists_backends_and_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    for text in (
        "--backend",
        "--token-file",
        "--allow-origin",
        "--ca-cert",
        "examples:",
        "JUPYTER_RELAY_",
        "jupyter-relay.toml",
        "local?root_dir=PATH",
        "/lab",
        "/relay/api/status",
        "/relay/metrics",
        "the status page",
        "--new-token",
    ):
        assert text in result.stdout
    assert result.stdout.count("(default: 127.0.0.1)") == 1  # the listen address default, once
    assert "loopback by default" not in result.stdout


def test_version_and_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_relay", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.startswith("jupyter-relay ")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "99999"], {}, "--port must be 0-65535"),
        (["--backend", "x=ftp://h/"], {}, "cannot read backend URI"),
        (["--backend", "x=http://h:1/?secret=1"], {}, "unknown option 'secret'"),
        ([], {"JUPYTER_RELAY_PROT": "1"}, "unknown environment variable JUPYTER_RELAY_PROT"),
        (["--no-auth", "--ip", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0"),
        (["--config", "/no/such.toml"], {}, "config file /no/such.toml does not exist"),
    ],
)
def test_bad_configuration_is_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jupyter-relay: error: ") and message in lines[0]


def test_port_in_use_is_one_line(jupyter: JupyterServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--port", str(port), "--backend", f"lab={jupyter.backend_arg}")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: another program uses it" in result.stderr


def test_backend_that_is_down_still_starts_and_answers_502(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = start_relay_process(
        ["--port", "0", "--backend", f"lab=http://127.0.0.1:{port}/"], tmp_path
    )
    try:
        status, body = get(relay.base + "api/kernels", relay.token)
        assert status == 502
        message = json.loads(body)["message"]
        assert f"backend 'lab' at 127.0.0.1:{port} is unreachable (Connection refused)" in message
        assert "serving lab (jupyter, primary): DOWN." in relay.logs()
    finally:
        relay.stop()


def children_of(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def wait_gone(procs: list[psutil.Process], timeout: float = 20) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


@pytest.fixture
def local_relay(tmp_path: Path) -> RelayProcess:
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "data.csv").write_text("a,b\n1,2\n")
    return start_relay_process(["--port", "0", "--log-level", "debug"], tmp_path, cwd=root)


def test_default_local_backend_serves_cwd_and_stops_cleanly(local_relay: RelayProcess) -> None:
    status, body = get(local_relay.base + "api/contents", local_relay.token)
    assert status == 200
    assert [item["name"] for item in json.loads(body)["content"]] == ["data.csv"]
    status, _ = get(local_relay.base + "api/contents")
    assert status == 403
    status, body = get(local_relay.base + "api/kernels", local_relay.token)
    assert status == 200
    children = children_of(local_relay.proc.pid)
    assert any("jupyter_server" in " ".join(c.cmdline()) for c in children)
    # The child's token is private: not on its command line, where ps would show it.
    assert not any("token" in " ".join(c.cmdline()).lower() for c in children)
    assert local_relay.stop(signal.SIGTERM) == 0
    assert wait_gone(children) == []
    logs = local_relay.logs()
    assert "stopped" in logs
    assert local_relay.token not in logs


def test_local_backend_dies_with_a_killed_relay(local_relay: RelayProcess) -> None:
    children = children_of(local_relay.proc.pid)
    assert children
    local_relay.stop(signal.SIGKILL)
    assert wait_gone(children, timeout=30) == []


def test_tokens_never_in_logs(jupyter: JupyterServer, tmp_path: Path) -> None:
    relay = start_relay_process(
        ["--port", "0", "--log-level", "debug", "--backend", f"lab={jupyter.base}?token_env=LAB"],
        tmp_path,
        env={"LAB": jupyter.token},
    )
    try:
        get(f"{relay.base}api/kernelspecs?token={relay.token}")
        get(relay.base + "api/kernelspecs", relay.token)
        get(relay.base + "api/kernelspecs", "wrong-token-value")
        get(f"{relay.base}lab?token={relay.token}")
        get(relay.base + "relay/api/status", relay.token)
    finally:
        relay.stop()
    logs = relay.logs()
    assert "GET /api/kernelspecs 401" not in logs  # the wrong token was refused...
    assert "/api/kernelspecs 403" in logs  # ...and logged, without its value
    for secret in (relay.token, jupyter.token, "wrong-token-value"):
        assert secret not in logs
    assert relay.token in relay.stdout.read_text()  # printed once, for the user to open


def test_ctrl_c_while_local_backend_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [str(BIN / "jupyter-relay"), "--port", "0"],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=_child_env(),
            cwd=tmp_path,
        )
    # Ctrl-C once the backend is starting (a fixed sleep raced Python's own start-up
    # on a loaded machine, where SIGINT then ends the interpreter before main runs).
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if b"starting a local Jupyter server" in line:
            break
    else:
        pytest.fail("the relay never said it was starting the local Jupyter")
    children = children_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.stderr.read()  # drain, so the relay never blocks writing its shutdown lines
    assert proc.wait(30) == 0
    assert wait_gone(children) == []


@pytest.mark.parametrize(
    ("args", "guess"),
    [
        (["--backends", "lab=http://127.0.0.1:1/"], "(did you mean --backend?)"),
        (["--prot", "9"], "(did you mean --port?)"),
        (["--no-fast-path"], "--no-fast-path was removed"),
        (["--zzzz"], ""),
    ],
)
def test_a_mistyped_flag_is_one_line_with_a_guess(
    args: list[str], guess: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # not argparse's usage block
    assert lines[0].startswith("jupyter-relay: error: unrecognized arguments: ")
    assert guess in lines[0] and lines[0].endswith("see jupyter-relay --help")


def test_the_printed_token_survives_a_restart(tmp_path: Path, jupyter: JupyterServer) -> None:
    """An IDE that saved the printed URL connects again after the relay restarts."""
    env = {"JUPYTER_DATA_DIR": str(tmp_path / "data")}
    args = ["--port", "0", "--backend", f"lab={jupyter.backend_arg}"]
    urls = []
    for extra in ([], [], ["--new-token"]):
        relay = start_relay_process([*args, *extra], tmp_path, env=env)
        try:
            urls.append(relay.url)
            assert get(relay.base + "api/status", relay.token)[0] == 200
        finally:
            relay.stop()
    tokens = [url.partition("?token=")[2] for url in urls]
    assert tokens[0] == tokens[1] != tokens[2]
    kept = tmp_path / "data" / "jupyter-relay" / "token"
    assert kept.read_text().strip() == tokens[2]
    assert kept.stat().st_mode & 0o777 == 0o600


def test_backends_down_at_start_are_said_plainly_then_retried_quietly(tmp_path: Path) -> None:
    """Which backends are up is said once at start; an ssh host that does not resolve is
    tried again and again, each failure like the last logged no more."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = start_relay_process(
        [
            "--port",
            "0",
            "--backend",
            "gpu=ssh://nosuchhost.invalid",
            "--backend",
            f"lab=http://127.0.0.1:{port}/",
        ],
        tmp_path,
    )
    try:
        said = relay.logs()
        assert "serving gpu (ssh, primary): DOWN. cannot resolve host 'nosuchhost.invalid'" in said
        assert f"serving lab (jupyter): DOWN. backend 'lab' at 127.0.0.1:{port}" in said
        assert "serving gpu (ssh, primary): up" not in said

        def tried_three_times() -> str | None:
            _, body = get(relay.base + "relay/api/status", relay.token)
            gpu = next(b for b in json.loads(body)["backends"] if b["name"] == "gpu")
            error = str(gpu["error"] or "")
            return error if re.search(r"attempt ([3-9]|\d\d)\b", error) else None

        eventually_sync(tried_three_times, timeout=30, what="gpu tried three times")
        # The start said it (progress and announcement); the background tries said nothing.
        assert relay.logs().count("cannot resolve host 'nosuchhost.invalid'") == 2, relay.logs()
    finally:
        relay.stop()
