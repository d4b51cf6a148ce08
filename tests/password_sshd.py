"""An SSH server that takes passwords only, for the `ssh` backend's prompt tests.

The fixture sshd (tests/sshd.py) takes keys only: giving root a password would change
the machine's /etc/shadow. This is asyncssh's server on a free loopback port, with a
generated host key, a private known_hosts and ssh_config: a real SSH server speaking the
real protocol, whose only account is USER with PASSWORD. Remote commands answer as a
machine with no Jupyter running: `jupyter server list` prints nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh

ALIAS = "pwbox"
USER = "me"
PASSWORD = "the right password"


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True  # every user must authenticate

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD


def _no_jupyter_running(process: asyncssh.SSHServerProcess[str]) -> None:
    process.exit(0)


@dataclass
class PasswordSshd:
    port: int
    ssh_config: Path

    def backend_arg(self, name: str = "gpu") -> str:
        return f"{name}=ssh://{ALIAS}?ssh_config={self.ssh_config}"


@contextlib.asynccontextmanager
async def password_sshd(work: Path) -> AsyncIterator[PasswordSshd]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _Server,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=_no_jupyter_running,
        kbdint_auth=False,  # asyncssh would offer the password as keyboard-interactive too
    )
    try:
        port = server.sockets[0].getsockname()[1]
        known_hosts = work / "pw_known_hosts"
        public = key.export_public_key().decode().strip()
        known_hosts.write_text(f"[127.0.0.1]:{port} {public}\n")
        (work / "pw_global_known_hosts").write_text("")
        config = work / "pw_ssh_config"
        config.write_text(
            f"Host {ALIAS}\n    HostName 127.0.0.1\n    Port {port}\n    User {USER}\n"
            f"    UserKnownHostsFile {known_hosts}\n"
            f"    GlobalKnownHostsFile {work / 'pw_global_known_hosts'}\n"
            f"    IdentityFile {work / 'no-key-here'}\n    IdentitiesOnly yes\n"
        )
        yield PasswordSshd(port, config)
    finally:
        server.close()
        await server.wait_closed()
