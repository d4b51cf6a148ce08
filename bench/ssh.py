"""The `ssh` scenario's machine: the run's backends behind a real loopback sshd, two ways through.

What a user of a remote GPU box has, on one machine:

- the tests' sshd (tests/sshd.py: OpenSSH's /usr/sbin/sshd on a free loopback port,
  private host and user keys, a private ssh_config naming it `gpu-box`);
- the run's Jupyter backend as the "remote" Jupyter: its runtime file is copied into
  the sshd's runtime directory, where `jupyter server list` over SSH finds it (as the
  tests' start_remote_jupyter arranges for a server of their own; the run's saves a
  second Jupyter's start, and every scenario's `direct` is the same server). In its root,
  a sparse file of `ssh_transfer_bytes` to download from `/files/`, and one in nginx's;
- `ssh_l`: ONE `ssh -N -L ...` with that ssh_config, forwarding a local port to each of
  the Jupyter, the web backend (nginx) and the node backend, as users do today;
- `relay`: the `jupyter-relay` command with `--backend gpu=ssh://gpu-box?ssh_config=...`,
  the Jupyter at its root and the other backends' ports at `/proxy/gpu:<port>/`.

The backends listen on loopback, where sshd reaches them as it would an app on the
remote machine; `direct` goes to them without SSH. Every way takes the run's token.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.sshd import SSH, Sshd, kill_remote_processes, start_sshd

from .backends import JUPYTER, NODE, WEB, Backends
from .paths import DIRECT, RELAY, RELAY_BIN, SSH_L, ProxyPath
from .procs import Child, Processes, base_env, free_port

SSH_BACKEND = "gpu"
BIG_NAME = "ssh.bin"  # in the Jupyter's root (for /files/) and in nginx's www
READY_TIMEOUT = 60.0


def _sparse(path: Path, size: int) -> None:
    """A file of `size` zero bytes that takes no disk (the page cache serves it)."""
    with path.open("wb") as f:
        f.truncate(size)


def _wait_answers(child: Child, url: str, token: str) -> None:
    """Wait until `url` answers 200 through `child` (its SSH connection up, the server found)."""
    headers = {"Authorization": f"token {token}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise child.fail(f"{url} did not answer 200 in {READY_TIMEOUT:.0f} s (last: {last})")


def _spawn_tunnel(
    procs: Processes, sshd: Sshd, ports: dict[str, int]
) -> tuple[Child, dict[str, int]]:
    """One `ssh -N` forwarding a free local port to each of `ports` on the far side (starting)."""
    local = {name: free_port() for name in ports}
    cmd = [SSH, "-F", str(sshd.ssh_config), "-N", "-o", "BatchMode=yes"]
    cmd += ["-o", "ExitOnForwardFailure=yes"]
    for name, port in ports.items():
        cmd += ["-L", f"127.0.0.1:{local[name]}:127.0.0.1:{port}"]
    return procs.spawn("ssh-L", [*cmd, sshd.alias]), local


def _spawn_relay(procs: Processes, sshd: Sshd, token: str) -> Child:
    cmd = [str(RELAY_BIN), "--port", "0", "--backend", sshd.backend_arg(SSH_BACKEND)]
    env = {
        "JUPYTER_RELAY_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(procs.workdir / "relay-ssh-config"),
    }
    return procs.spawn("relay-ssh", cmd, env=env)


def _paths(
    backends: Backends,
    tunnel: Child,
    local: dict[str, int],
    relay: Child,
    relay_base: str,
) -> dict[str, ProxyPath]:
    port_proxy = f"{relay_base}proxy/{SSH_BACKEND}:"
    paths = [
        ProxyPath(DIRECT, {name: backends.base(name) for name in local}),
        ProxyPath(
            SSH_L,
            {name: f"http://127.0.0.1:{port}/" for name, port in local.items()},
            dict.fromkeys(local, tunnel),
        ),
        ProxyPath(
            RELAY,
            {
                JUPYTER: relay_base,
                WEB: f"{port_proxy}{backends.ports[WEB]}/",
                NODE: f"{port_proxy}{backends.ports[NODE]}/",
            },
            dict.fromkeys(local, relay),
        ),
    ]
    return {p.name: p for p in paths}


@dataclass
class SshWorld:
    """The running pieces, and the three paths to the Jupyter, the web and the node backends."""

    procs: Processes
    sshd: Sshd | None = None
    paths: dict[str, ProxyPath] = field(default_factory=dict)
    # The file to download, in the Jupyter's root and in nginx's www.
    big_files: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """The relay and ssh, then sshd and anything left under it."""
        self.procs.stop_all()
        if self.sshd is not None:
            with contextlib.suppress(Exception):
                self.sshd.stop()
            kill_remote_processes(self.sshd)
        for big in self.big_files:
            big.unlink(missing_ok=True)


def start_world(workdir: Path, backends: Backends, transfer_bytes: int) -> SshWorld:
    """Start sshd, announce the Jupyter to it, start `ssh -L` and the relay (logs in `workdir`)."""
    workdir.mkdir()
    world = SshWorld(Processes(workdir, base_env()))
    try:
        world.sshd = sshd = start_sshd(workdir)
        runtime_file = backends.jupyter_runtime_file
        shutil.copyfile(runtime_file, sshd.runtime_dir / runtime_file.name)
        world.big_files = [backends.jupyter_root / BIG_NAME, backends.big_file.parent / BIG_NAME]
        for big in world.big_files:
            _sparse(big, transfer_bytes)
        far = {name: backends.ports[name] for name in (JUPYTER, WEB, NODE)}
        tunnel, local = _spawn_tunnel(world.procs, sshd, far)
        relay = _spawn_relay(world.procs, sshd, backends.token)
        relay_base = relay.wait_output(r"(http://127\.0\.0\.1:\d+/)").group(1)
        for port in local.values():
            tunnel.wait_listening(port)
        _wait_answers(tunnel, f"http://127.0.0.1:{local[JUPYTER]}/api/status", backends.token)
        _wait_answers(relay, f"{relay_base}api/status", backends.token)
    except BaseException:
        world.stop()
        raise
    world.paths = _paths(backends, tunnel, local, relay, relay_base)
    return world
