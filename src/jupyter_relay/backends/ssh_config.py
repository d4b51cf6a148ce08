"""Reading the ssh config as `ssh` would, for the `ssh` backend's login and its messages.

Which identity files and known_hosts files the config names (with ~ expanded;
ssh skips those that do not exist, where asyncssh would fail), its keepalive
options, and the host name and port a host key is recorded under. asyncssh
reads the config again itself when it connects: these readers only fill in
what it needs told, and fall back to defaults on any surprise.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from pathlib import Path
from typing import Any

from ..specs import SshTarget

log = logging.getLogger("jupyter_relay.ssh")


def client_config(target: SshTarget) -> Any | None:
    """The ssh config for `target` as asyncssh reads it, or None if it cannot be read.

    asyncssh's config reader is not public API: on any surprise, the callers
    fall back to their defaults (and asyncssh itself reads the file again).
    """
    try:
        from asyncssh.config import SSHClientConfig

        paths = (
            [str(target.ssh_config)]
            if target.ssh_config
            else [str(Path.home() / ".ssh" / "config")]
        )
        paths = [p for p in paths if Path(p).exists()]
        return SSHClientConfig.load(
            None,
            paths,
            False,
            False,
            False,
            getpass.getuser(),
            target.user or (),
            target.host,
            target.port or (),
        )
    except Exception as exc:  # reading it for messages and defaults must not fail the login
        log.debug("cannot read the ssh config for %s: %s", target.host, exc)
        return None


def int_option(config: Any | None, name: str, default: float) -> float:
    value = config.get(name) if config is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _config_paths(config: Any | None, *options: str) -> list[str]:
    """The paths the config gives for `options`, in order, with ~ expanded."""
    named: list[str] = []
    for option in options:
        value = config.get(option) if config is not None else None
        if isinstance(value, (list, tuple)):
            named += [str(Path(str(v)).expanduser()) for v in value]
    return named


def identity_files(config: Any | None) -> list[str] | None:
    """The IdentityFile paths the config names, or None when it names none."""
    return _config_paths(config, "IdentityFile") or None


def known_hosts_files(config: Any | None) -> list[str] | None:
    """The known_hosts files the config names (user's, then global), or None if it names none."""
    return _config_paths(config, "UserKnownHostsFile", "GlobalKnownHostsFile") or None


# Hardware AES (AES-NI, ARMv8 crypto) makes AES-GCM the fastest cipher asyncssh has:
# ~1.8x chacha20-poly1305, its default first choice, measured through a loopback sshd.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def encryption_algs(config: Any | None, defaults: list[str]) -> list[str] | None:
    """The ciphers to offer, best first: None when the config names its own (`Ciphers`).

    `defaults` is asyncssh's list; the AES-GCM ones move to its front.
    """
    if config is not None and config.get("Ciphers"):
        return None
    return [c for c in FAST_CIPHERS if c in defaults] + [
        c for c in defaults if c not in FAST_CIPHERS
    ]


def existing(paths: list[str]) -> list[str]:
    return [p for p in paths if Path(p).is_file()]


def known_hosts_of(target: SshTarget) -> tuple[str, int, list[str]]:
    """(host name, port, known_hosts files) that ssh would use for `target`."""
    host, port = target.host, target.port or 22
    files = [str(Path.home() / ".ssh" / "known_hosts")]
    config = client_config(target)
    if config is None:
        return host, port, files
    with contextlib.suppress(Exception):  # a message helper must not fail the connection
        host = str(config.get("Hostname") or host)
        port = target.port or int(str(config.get("Port") or 22))
        files = _config_paths(config, "UserKnownHostsFile") or files
    return host, port, files
