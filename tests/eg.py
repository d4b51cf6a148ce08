"""A real Jupyter Enterprise Gateway that launches kernels over SSH on two loopback "hosts".

Enterprise Gateway (EG) runs from its own venv, `.venv-eg` in the checkout (or
`$RELAY_EG_VENV`): it pins jupyter_client<7. Its kernel launchers ship only in its
source distribution; scripts/test unpacks them into `.cache/eg-launchers-<version>` (or
`$RELAY_EG_LAUNCHERS`). Both are made by scripts/test; a missing one is an error that
says so, never a skip.

The two "hosts" are real sshd bound to 127.0.0.2 and 127.0.0.3 on one port (EG has one
`EG_SSH_PORT` for every host; it takes 127.0.0.1 for itself and would skip SSH), each
with its own host key. EG's SSH client (paramiko) reads the user's key and known_hosts
from `~/.ssh`: EG gets a private HOME whose `.ssh` holds a key both hosts accept and
both host keys, so a host key that does not match is refused (EG's RejectPolicy).

Kernelspecs (EG's DistributedProcessProxy, round-robin over both hosts):
- `python_distributed`: EG's own launcher, run with the EG venv's Python on the host.
- `python_slow`: the same after `SLOW_START` seconds, for starts that take a while.
- `python_refused`: the first, refusing the relay's user (`getpass.getuser()`) as
  EG refuses root by default: a start under that name gets EG's 403.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .servers import KernelGateway, free_port
from .sshd import USER, Sshd, kill_remote_processes, start_sshd
from .waiting import eventually_sync

ROOT = Path(__file__).resolve().parent.parent
VERSION = "3.3.0"
VENV = Path(os.environ.get("RELAY_EG_VENV", ROOT / ".venv-eg"))
LAUNCHERS = Path(os.environ.get("RELAY_EG_LAUNCHERS", ROOT / f".cache/eg-launchers-{VERSION}"))
HOSTS = ("127.0.0.2", "127.0.0.3")
SPEC = "python_distributed"
SLOW_SPEC = "python_slow"
REFUSED_SPEC = "python_refused"
SLOW_START = 4.0
START_TIMEOUT = 60.0


def installed() -> tuple[Path, Path]:
    """EG's Python and its Python kernel launcher; RuntimeError naming the fix if missing."""
    python = VENV / "bin" / "python"
    launcher = LAUNCHERS / "python" / "scripts" / "launch_ipykernel.py"
    for path in (python, launcher):
        if not path.exists():
            raise RuntimeError(
                f"{path} is missing: scripts/test installs Enterprise Gateway {VERSION} "
                "(.venv-eg) and unpacks its kernel launchers (.cache); run it once"
            )
    return python, launcher


@dataclass
class EnterpriseGateway(KernelGateway):
    """A running EG, its token, and the two sshd it launches kernels on.

    Reached as a Kernel Gateway is (`base`, `backend_arg`), with its hosts beside it.
    """

    hosts: list[Sshd] = field(default_factory=list)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop EG (it shuts its kernels down), then the hosts and whatever still runs there."""
        super().stop()
        for host in self.hosts:
            host.stop()
            kill_remote_processes(host)


def start_hosts(work: Path) -> list[Sshd]:
    """sshd on 127.0.0.2 and 127.0.0.3, one port, each its own host key."""
    for _ in range(5):
        port = free_port()
        started: list[Sshd] = []
        try:
            for index, address in enumerate(HOSTS):
                started.append(
                    start_sshd(work, alias=f"eg-host-{index}", address=address, port=port)
                )
        except RuntimeError:
            for host in started:
                host.stop()
            continue
        return started
    raise RuntimeError(f"no port free on both {' and '.join(HOSTS)} for sshd")


def _ssh_home(work: Path, hosts: list[Sshd]) -> Path:
    """A HOME for EG whose ~/.ssh reaches both hosts: one key, both host keys."""
    home = work / f"eg-home-{secrets.token_hex(4)}"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key = hosts[0].user_key
    shutil.copy(key, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    public = key.with_suffix(".pub").read_text()
    for host in hosts[1:]:
        with host.authorized_keys.open("a") as keys:
            keys.write(public)
    (ssh_dir / "known_hosts").write_text("".join(h.known_hosts_line for h in hosts))
    return home


def _kernelspecs(share: Path, python: Path, launcher: Path) -> None:
    args = [
        "--kernel-id",
        "{kernel_id}",
        "--port-range",
        "{port_range}",
        "--response-address",
        "{response_address}",
        "--public-key",
        "{public_key}",
    ]
    proxy = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"
    hosts = ",".join(HOSTS)
    specs = {
        SPEC: ([str(python), str(launcher)], {}),
        SLOW_SPEC: ([str(share / "kernels" / SLOW_SPEC / "slow_launch.sh")], {}),
        REFUSED_SPEC: ([str(python), str(launcher)], {"unauthorized_users": getpass.getuser()}),
    }
    for name, (argv, extra) in specs.items():
        spec_dir = share / "kernels" / name
        spec_dir.mkdir(parents=True)
        spec = {
            "display_name": f"Python 3 ({name})",
            "language": "python",
            "argv": argv + args,
            "metadata": {
                "process_proxy": {
                    "class_name": proxy,
                    "config": {"remote_hosts": hosts, **extra},
                }
            },
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    slow = share / "kernels" / SLOW_SPEC / "slow_launch.sh"
    slow.write_text(f'#!/bin/sh\nsleep {SLOW_START}\nexec {python} {launcher} "$@"\n')
    slow.chmod(0o755)


def start_enterprise_gateway(work: Path, hosts: list[Sshd]) -> EnterpriseGateway:
    """EG on a free loopback port with a token, launching on `hosts` over SSH."""
    python, launcher = installed()
    eg_dir = work / f"eg-{secrets.token_hex(4)}"
    share = eg_dir / "share"
    _kernelspecs(share, python, launcher)
    (eg_dir / "kernel-logs").mkdir()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "KERNEL_"))}
    env.update(
        {
            "HOME": str(_ssh_home(eg_dir, hosts)),
            "JUPYTER_PATH": str(share),
            "JUPYTER_CONFIG_DIR": str(eg_dir / "config"),
            "JUPYTER_DATA_DIR": str(eg_dir / "data"),
            "JUPYTER_RUNTIME_DIR": str(eg_dir / "runtime"),
            # EG answers on another interface unless told; kernels call back here.
            "EG_RESPONSE_IP": "127.0.0.1",
            "EG_SSH_PORT": str(hosts[0].port),
            "EG_REMOTE_USER": USER,
            "EG_KERNEL_LOG_DIR": str(eg_dir / "kernel-logs"),
        }
    )
    log = eg_dir / "eg.log"
    for _ in range(5):  # EG has no port 0: pick ports, retry if taken meanwhile
        port = free_port()
        env["EG_RESPONSE_PORT"] = str(free_port())
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "enterprise_gateway",
                    "--EnterpriseGatewayApp.ip=127.0.0.1",
                    f"--EnterpriseGatewayApp.port={port}",
                    "--EnterpriseGatewayApp.port_retries=0",
                    "--EnterpriseGatewayApp.response_port_retries=0",
                    f"--EnterpriseGatewayApp.auth_token={token}",
                    "--EnterpriseGatewayApp.list_kernels=True",
                    f"--EnterpriseGatewayApp.default_kernel_name={SPEC}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=eg_dir,
            )
        gateway = EnterpriseGateway(proc, port, token, log, hosts=hosts)
        try:
            eventually_sync(
                lambda gateway=gateway: _answers(gateway),  # type: ignore[misc]
                timeout=START_TIMEOUT,
                what="EG lists kernelspecs",
            )
        except (AssertionError, RuntimeError) as exc:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if "already in use" in gateway.logs():
                continue
            raise RuntimeError(f"Enterprise Gateway did not start: {gateway.logs()}") from exc
        return gateway
    raise RuntimeError("no free port for Enterprise Gateway")


def _answers(gateway: EnterpriseGateway) -> bool:
    if gateway.proc.poll() is not None:
        raise RuntimeError(f"Enterprise Gateway exited ({gateway.proc.returncode})")
    request = urllib.request.Request(
        gateway.base + "api/kernelspecs", headers={"Authorization": f"token {gateway.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running_enterprise_gateway(work: Path) -> Iterator[EnterpriseGateway]:
    """EG and its two hosts for a block; afterwards they and every kernel they ran are gone."""
    hosts = start_hosts(work)
    try:
        gateway = start_enterprise_gateway(work, hosts)
    except BaseException:
        for host in hosts:
            host.stop()
        raise
    try:
        yield gateway
    finally:
        gateway.stop()
