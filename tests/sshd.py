"""A real OpenSSH server on loopback for the `ssh` backend's tests, and the "remote" Jupyter.

`start_sshd` runs `/usr/sbin/sshd -D -e -f <config>` (as root: the tests run as root) on a
free 127.0.0.1 port, everything in a private directory: a generated ed25519 host key, a
generated key pair for root whose public half is the only entry of a private
authorized_keys file, a pid file, and a log. Remote commands get the venv's `bin` first on
PATH, a private HOME and a private JUPYTER_RUNTIME_DIR (sshd's `SetEnv`), so `jupyter
server list` on the "remote" sees only the servers of this fixture, never the user's, and
neither root's login scripts nor what the relay leaves in ~ touch the real home. A private
ssh_config names the server `gpu-box` (HostName, Port, User root, IdentityFile,
IdentitiesOnly, UserKnownHostsFile holding the host key as `[127.0.0.1]:PORT ...`); the
fixture checks it with the real `ssh` client before handing it out. Nothing here reads or
writes ~/.ssh.

`stop()` kills sshd and its per-connection children, so live SSH connections drop, as when
a machine goes away; `restart()` brings it back on the same port with the same keys.

`start_remote_jupyter` starts the "remote" Jupyter on this machine with the fixture's
runtime directory, on a port chosen by the kernel that the relay is never told: the relay
can only find it by asking `jupyter server list` over SSH.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from .servers import BIN, JupyterServer, free_port, start_jupyter
from .waiting import eventually_sync

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
# sshd refuses to start without its privilege separation directory (a packaged sshd makes it).
PRIVSEP_DIR = Path("/run/sshd")
ALIAS = "gpu-box"
USER = "root"
START_TIMEOUT = 20.0


def keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair without passphrase at `path`; return the public line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def public_key(pub_line: str) -> str:
    """`ssh-ed25519 AAAA...` without the comment."""
    kind, blob = pub_line.split()[:2]
    return f"{kind} {blob}"


@dataclass
class Sshd:
    """A running sshd of the tests', and the client files that reach it."""

    dir: Path
    port: int
    config: Path
    ssh_config: Path
    known_hosts: Path
    runtime_dir: Path
    jupyter_config_dir: Path
    home: Path
    host_key: Path
    user_key: Path
    authorized_keys: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    alias: str = ALIAS
    base_config: str = ""  # sshd_config as start_sshd wrote it
    address: str = "127.0.0.1"  # the loopback address it listens on

    @property
    def host_public_key(self) -> str:
        return public_key(self.host_key.with_suffix(".pub").read_text())

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.address}]:{self.port} {self.host_public_key}\n"

    def backend_arg(self, name: str = "gpu", ssh_config: Path | None = None, **options: str) -> str:
        """`NAME=ssh://ALIAS?ssh_config=...&...` for --backend."""
        query = {"ssh_config": str(ssh_config or self.ssh_config), **options}
        text = "&".join(f"{key}={value}" for key, value in query.items())
        return f"{name}=ssh://{self.alias}?{text}"

    def client_config(
        self,
        tag: str,
        *,
        identity: Path | None = None,
        known_hosts: Path | None = None,
        user: str = USER,
        extra: str = "",
    ) -> Path:
        """Write an ssh_config variant for this server (another key, another known_hosts).

        `extra` lines go in the Host block after the others (ssh takes the first value of
        most keywords, but adds up IdentityFile lines).
        """
        path = self.dir / f"ssh_config-{tag}"
        path.write_text(
            f"Host {self.alias}\n"
            f"    HostName {self.address}\n"
            f"    Port {self.port}\n"
            f"    User {user}\n"
            f"    IdentityFile {identity or self.user_key}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts or self.known_hosts}\n"
            f"    GlobalKnownHostsFile {self.dir / 'global_known_hosts'}\n" + extra
        )
        return path

    def ssh(
        self, command: str, *, ssh_config: Path | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` on the "remote" with the real OpenSSH client, never prompting."""
        return subprocess.run(
            [
                SSH,
                "-F",
                str(ssh_config or self.ssh_config),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                self.alias,
                command,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _launch(self) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        mark = f"Server listening on {self.address} port {self.port}"
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def listening() -> bool:
            with self.log.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if mark not in text and proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({proc.returncode}): {text[-2000:]}")
            return mark in text

        try:
            eventually_sync(listening, timeout=START_TIMEOUT, interval=0.02, what=repr(mark))
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"sshd did not listen on port {self.port}: {self.logs()}") from exc

    def stop(self) -> None:
        """Kill sshd and every sshd process it forked: live SSH connections drop at once.

        The user's processes under those connections (remote commands) are left to the
        kernel's usual hangup handling, as when a real server's sshd dies.
        """
        if self.proc is None:
            return
        victims: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            master = psutil.Process(self.proc.pid)
            victims.append(master)
            for child in master.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.name().startswith("sshd"):
                        victims.append(child)
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(10)
        # The others are not our children: dead once a zombie (init reaps them later).
        try:
            eventually_sync(
                lambda: not [p for p in victims if _alive(p)],
                timeout=10,
                interval=0.01,
                what="no sshd process left",
            )
        except AssertionError as exc:
            alive = [p for p in victims if _alive(p)]
            raise RuntimeError(f"sshd processes survived SIGKILL: {alive}") from exc

    def reconfigure(self, extra: str = "") -> None:
        """Stop sshd, add `extra` lines to its config (or drop earlier ones), start it again.

        sshd takes the first value of a keyword: only keywords the base config does not
        set (MaxSessions, PermitOpen, ...) can be added this way.
        """
        self.stop()
        self.config.write_text(self.base_config + extra)
        self.restart()

    def restart(self) -> None:
        """Start sshd again on the same port, with the same keys and configuration."""
        if self.running():
            raise RuntimeError("sshd is still running")
        self._launch()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sshd_config(
    sshd_dir: Path,
    port: int,
    host_key: Path,
    authorized_keys: Path,
    env: dict[str, str],
    address: str = "127.0.0.1",
) -> str:
    setenv = " ".join(f'"{key}={value}"' for key, value in env.items())
    return (
        f"Port {port}\n"
        f"ListenAddress {address}\n"
        f"HostKey {host_key}\n"
        f"PidFile {sshd_dir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "AllowTcpForwarding yes\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "UseDNS no\n"
        "LogLevel VERBOSE\n"
        f"SetEnv {setenv}\n"
    )


def start_sshd(
    workdir: Path, *, alias: str = ALIAS, address: str = "127.0.0.1", port: int | None = None
) -> Sshd:
    """A real sshd on a free loopback port with private keys, known_hosts and ssh_config.

    `address` is the loopback address it listens on (127.0.0.2 is "another host" to a
    program that takes only 127.0.0.1 for this one); `port` a port to take instead of a
    free one (RuntimeError if it is taken).
    """
    sshd_dir = workdir / f"sshd-{secrets.token_hex(4)}"
    sshd_dir.mkdir(mode=0o700, parents=True)
    runtime_dir = sshd_dir / "runtime"
    runtime_dir.mkdir(mode=0o700)
    jupyter_config_dir = sshd_dir / "jupyter-config"
    jupyter_config_dir.mkdir()
    # root's HOME on the "remote": its login scripts and what the relay leaves in ~ stay here.
    home = sshd_dir / "home"
    home.mkdir()
    host_key = sshd_dir / "host_ed25519"
    user_key = sshd_dir / "id_ed25519"
    keygen(host_key, "jupyter-relay test host")
    authorized_keys = sshd_dir / "authorized_keys"
    authorized_keys.write_text(keygen(user_key, "jupyter-relay test user") + "\n")
    (sshd_dir / "global_known_hosts").write_text("")
    env = {
        "HOME": str(home),
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        # The user's Jupyter configuration stays out of the "remote" too.
        "JUPYTER_CONFIG_DIR": str(jupyter_config_dir),
    }
    config = sshd_dir / "sshd_config"
    sshd: Sshd | None = None
    given_port = port
    for _ in range(5):  # sshd has no port 0: pick one, retry if taken meanwhile
        port = given_port or free_port()
        base_config = _sshd_config(sshd_dir, port, host_key, authorized_keys, env, address)
        config.write_text(base_config)
        sshd = Sshd(
            dir=sshd_dir,
            port=port,
            config=config,
            ssh_config=sshd_dir / "ssh_config",
            known_hosts=sshd_dir / "known_hosts",
            runtime_dir=runtime_dir,
            jupyter_config_dir=jupyter_config_dir,
            home=home,
            host_key=host_key,
            user_key=user_key,
            authorized_keys=authorized_keys,
            log=sshd_dir / f"sshd-{port}.log",
            alias=alias,
            base_config=base_config,
            address=address,
        )
        try:
            sshd._launch()
            break
        except RuntimeError:
            if "Address already in use" in sshd.logs() and given_port is None:
                continue
            raise
    else:
        raise RuntimeError("no free port for sshd")
    assert sshd is not None
    sshd.known_hosts.write_text(sshd.known_hosts_line)
    sshd.client_config("main").rename(sshd.ssh_config)
    try:
        check_login(sshd)
    except BaseException:
        sshd.stop()
        raise
    return sshd


def check_login(sshd: Sshd) -> None:
    """The real `ssh` client logs in with the private files, and sees the fixture's env."""
    probe = 'command -v jupyter; echo "$JUPYTER_RUNTIME_DIR"; cd && pwd'
    done = sshd.ssh(probe)
    if done.returncode != 0:
        raise RuntimeError(
            f"ssh -F {sshd.ssh_config} {sshd.alias} failed ({done.returncode}): "
            f"{done.stderr.strip()}\nsshd log:\n{sshd.logs()}"
        )
    lines = done.stdout.split()
    expected = [str(BIN / "jupyter"), str(sshd.runtime_dir), str(sshd.home)]
    if lines != expected:
        # e.g. a login script of the user's that puts another `jupyter` first on PATH.
        raise RuntimeError(f"the remote login sees {lines}, not {expected}")


# --- the "remote" Jupyter -------------------------------------------------------------------


def start_remote_jupyter(sshd: Sshd, root: Path) -> JupyterServer:
    """A `jupyter server` whose runtime file lands in sshd's runtime directory.

    It listens on a port chosen by the kernel (`--port=0`) and read back from that file;
    the relay is told only the SSH alias, so it must discover the server over SSH.
    """
    return start_jupyter(
        root,
        sshd.dir,
        runtime_dir=sshd.runtime_dir,
        env_extra={
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "JUPYTER_CONFIG_DIR": str(sshd.jupyter_config_dir),
        },
    )


def runtime_servers(sshd: Sshd) -> dict[int, dict[str, object]]:
    """The Jupyter servers announced in sshd's runtime directory, by pid."""
    found: dict[int, dict[str, object]] = {}
    for path in sshd.runtime_dir.glob("jpserver-*.json"):
        match = re.fullmatch(r"jpserver-(\d+)\.json", path.name)
        if match is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            found[int(match.group(1))] = json.loads(path.read_text())
    return found


def remote_processes(sshd: Sshd) -> list[psutil.Process]:
    """Every process on the "remote" side of this sshd: those that got its runtime dir."""
    mine: list[psutil.Process] = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("JUPYTER_RUNTIME_DIR") == str(sshd.runtime_dir):
                mine.append(proc)
    return mine


FAR_SIDE_MARK = "jupyter-relay-far-side"  # in the program text of the relay's helper


def far_sides(sshd: Sshd) -> list[psutil.Process]:
    """The relay's helpers running on the "remote" side of this sshd."""
    found = []
    for proc in remote_processes(sshd):
        with contextlib.suppress(psutil.Error):
            if any(FAR_SIDE_MARK in part for part in proc.cmdline()):
                found.append(proc)
    return found


def kill_remote_processes(sshd: Sshd) -> list[str]:
    """Kill whatever runs with this sshd's runtime dir (servers, kernels); say what it was."""
    victims = remote_processes(sshd)
    killed: list[str] = []
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            killed.append(shlex.join(proc.cmdline()))
            proc.kill()
    psutil.wait_procs(victims, timeout=10)
    return killed


@contextlib.contextmanager
def running_sshd(work: Path) -> Iterator[Sshd]:
    """sshd for a block; afterwards it and every "remote" process it served are gone."""
    server = start_sshd(work)
    try:
        yield server
    finally:
        server.stop()
        kill_remote_processes(server)
