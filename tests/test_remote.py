"""Finding the remote Jupyter: the commands sent over SSH and reading their answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from jupyter_relay.backends import remote

from .waiting import eventually_sync

SERVERS = [
    {
        "base_url": "/",
        "hostname": "localhost",
        "port": 8888,
        "secure": False,
        "token": "t1",
        "root_dir": "/home/me",
        "pid": 10,
    },
    {
        "base_url": "/lab/x",
        "hostname": "0.0.0.0",
        "port": 8890,
        "secure": True,
        "token": "",
        "notebook_dir": "/data",
        "pid": 11,
    },
]


def test_parse_list_reads_json_lines_and_skips_noise() -> None:
    output = "\n".join(["[W warning from a plugin]", *(json.dumps(s) for s in SERVERS), "{bad"])
    servers = remote.parse_list(output)
    assert [s.port for s in servers] == [8888, 8890]
    first, second = servers
    assert (first.host, first.base_url, first.token, first.root_dir) == (
        "localhost",
        "/",
        "t1",
        "/home/me",
    )
    assert (second.host, second.base_url, second.secure, second.root_dir) == (
        "127.0.0.1",
        "/lab/x/",
        True,
        "/data",
    )
    assert second.describe() == "port 8890/lab/x/ (/data, pid 11)"
    assert remote.parse_list(json.dumps(SERVERS)) == servers  # notebook's older list form
    assert remote.parse_list("") == []


def test_pick_by_port_or_first() -> None:
    servers = remote.parse_list("\n".join(json.dumps(s) for s in SERVERS))
    assert remote.pick(servers, None) is servers[0]
    assert remote.pick(servers, 8890) is servers[1]
    assert remote.pick(servers, 9999) is None
    assert remote.pick([], None) is None


def test_commands_quote_the_jupyter_path() -> None:
    assert remote.list_command("jupyter") == "jupyter server list --json"
    assert remote.list_command("/opt/my env/jupyter", "notebook") == (
        "'/opt/my env/jupyter' notebook list --json"
    )
    assert "'/x;rm -rf ~'" in remote.start_command("/x;rm -rf ~", ".jupyter-relay/gpu.log")


def test_start_command_runs_detached_and_prints_its_pid(tmp_path: Path) -> None:
    """Run the real command with a stand-in `jupyter` that records its arguments."""
    fake = tmp_path / "jupyter"
    # Written aside and renamed, so the test never reads a file the shell has only created.
    fake.write_text(
        '#!/bin/sh\necho "$@" > "$HOME/args.part"\nmv "$HOME/args.part" "$HOME/args"\nsleep 30\n'
    )
    fake.chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["sh", "-c", remote.start_command(str(fake), ".jupyter-relay/gpu.log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    pid = int(done.stdout.strip())
    try:
        assert done.returncode == 0
        assert subprocess.run(["sh", "-c", remote.alive_command(pid)]).returncode == 0
        args_file = tmp_path / "args"
        eventually_sync(
            args_file.exists, timeout=5, interval=0.1, what="the stand-in records its arguments"
        )
        args = args_file.read_text()
        assert "server --no-browser --port=0 --ServerApp.ip=127.0.0.1" in args
        assert (tmp_path / ".jupyter-relay" / "gpu.log").exists()
    finally:
        subprocess.run(["kill", str(pid)])


def test_messages_say_what_to_do() -> None:
    assert "?start=true" in remote.none_running("me@gpu", None)
    assert "?jupyter_port=" in remote.none_running("me@gpu", 8888)
    assert "?jupyter=/path/to/bin/jupyter" in remote.no_jupyter("me@gpu", "jupyter")
