"""What `contrib/` offers a user: a systemd user unit, a launchd agent, shell completion.

The unit is verified by systemd itself (`systemd-analyze verify`), with its
`ExecStart` pointed at this checkout's command; its `Type=notify` is tested
against the relay with a real notification socket; the completion script is
sourced into a real bash and asked to complete.
"""

from __future__ import annotations

import plistlib
import shutil
import socket
import subprocess
from pathlib import Path

from .servers import BIN, JupyterServer, start_relay_process

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def test_the_systemd_unit_is_valid_and_waits_for_readiness(tmp_path: Path) -> None:
    text = (CONTRIB / "jupyter-relay.service").read_text()
    assert "Type=notify" in text and "%h/.local/bin/jupyter-relay" in text
    unit = tmp_path / "jupyter-relay.service"
    unit.write_text(text.replace("%h/.local/bin/jupyter-relay", str(BIN / "jupyter-relay")))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian's systemd; scripts/test installs it)"
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warning either


def test_the_relay_tells_the_service_manager_it_serves(
    tmp_path: Path, jupyter: JupyterServer
) -> None:
    """`Type=notify`: READY=1 comes once the URL is printed, STOPPING=1 at SIGTERM."""
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(address))
        manager.settimeout(60)
        relay = start_relay_process(
            ["--port", "0", "--backend", f"lab={jupyter.backend_arg}"],
            tmp_path,
            env={"NOTIFY_SOCKET": str(address)},
        )
        try:
            ready = manager.recv(4096).decode()
            assert "READY=1" in ready.splitlines(), ready
            assert f"STATUS=serving on port {relay.port}; 1/1 backends up" in ready
        finally:
            assert relay.stop() == 0
        assert "STOPPING=1" in manager.recv(4096).decode().splitlines()


def test_the_launchd_agent_is_a_valid_property_list() -> None:
    with (CONTRIB / "org.jupyter.relay.plist").open("rb") as file:
        agent = plistlib.load(file)
    assert agent["Label"] == "org.jupyter.relay"
    assert agent["ProgramArguments"][0].endswith("/jupyter-relay")
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}


def test_bash_completes_the_relays_flags() -> None:
    script = subprocess.run(
        [str(BIN / "jupyter-relay"), "--print-completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    probe = (
        f"{script}\n"
        "COMP_WORDS=(jupyter-relay --back); COMP_CWORD=1; COMP_LINE='jupyter-relay --back'\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "_shtab_jupyter_relay jupyter-relay --back jupyter-relay\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--backend" in result.stdout.split(), result.stdout
    assert "--backend-timeout" in result.stdout.split(), result.stdout
