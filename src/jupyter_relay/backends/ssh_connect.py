"""Logging in to the `ssh` backend's host as `ssh` would, and what to say when that fails.

asyncssh is given what the ssh config says (keepalives, identity files,
known_hosts files) and asks for passwords or keyboard-interactive answers on
the terminal, if there is one; the connect timeout stands still while the user
types. An unknown or changed host key is refused, with its fingerprint and the
command that trusts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncssh

from ..errors import BackendTimeout, BackendUnreachable
from ..specs import SshTarget
from .base import HttpBackend
from .ssh_config import (
    client_config,
    encryption_algs,
    existing,
    identity_files,
    int_option,
    known_hosts_files,
    known_hosts_of,
)

log = logging.getLogger("jupyter_relay.ssh")

KEEPALIVE = 10.0
KEEPALIVE_COUNT = 3
PASSWORD_PROMPTS = 3  # a connection asks this many times, as ssh's NumberOfPasswordPrompts


class SshError(BackendUnreachable):
    """A failure to log in or to find the remote Jupyter; the message says what to do."""


class _Client(asyncssh.SSHClient):
    """Asks for a password or keyboard-interactive answers on the terminal, if there is one.

    One per connection: a password that worked is kept for the reconnections,
    and offered first; one the server refuses is dropped and asked again, up
    to PASSWORD_PROMPTS times, as ssh does.
    """

    def __init__(self, backend: SshConnect) -> None:
        self.backend = backend
        self.offered_kept = False
        self.prompts = 0
        self.given: str | None = None

    async def password_auth_requested(self) -> str | None:
        backend = self.backend
        if backend._password is not None:
            if not self.offered_kept:
                self.offered_kept = True
                self.given = backend._password
                return self.given
            backend._password = None  # refused: it changed, or was mistyped long ago
        if not backend.interactive or self.prompts >= PASSWORD_PROMPTS:
            return None
        self.prompts += 1
        prompt = f"jupyter-relay: password for {backend.target.address}: "
        self.given = await backend.on_terminal(getpass.getpass, prompt)
        return self.given

    def auth_completed(self) -> None:
        if self.given is not None:
            self.backend._password = self.given

    def kbdint_auth_requested(self) -> str | None:
        return "" if self.backend.interactive else None

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        if not self.backend.interactive:
            return None
        answers = []
        where = f"jupyter-relay: {self.backend.target.address}"
        for prompt, echo in prompts:
            ask = input if echo else getpass.getpass
            answers.append(await self.backend.on_terminal(ask, f"{where}: {prompt}"))
        return answers


class SshConnect(HttpBackend):
    """Logging in: mixed into `SshBackend`, whose `__init__` sets these attributes."""

    target: SshTarget
    interactive: bool  # passwords and answers can be asked on a terminal
    _password: str | None  # the one that worked, offered first on a reconnection
    _prompt_started: float | None  # when the user was asked, while asked
    _typing: float  # seconds spent at prompts during this connect

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t = self.target
        config = client_config(t)
        options: dict[str, Any] = {
            # ServerAliveInterval/ServerAliveCountMax of the ssh config win, as with ssh.
            "keepalive_interval": int_option(config, "ServerAliveInterval", KEEPALIVE),
            "keepalive_count_max": int_option(config, "ServerAliveCountMax", KEEPALIVE_COUNT),
            "connect_timeout": None,  # _connecting times it, pausing while the user types
        }
        ciphers = encryption_algs(
            config, [c.decode() for c in asyncssh.encryption.get_default_encryption_algs()]
        )
        if ciphers is not None:
            options["encryption_algs"] = ciphers
        if config is not None and config.get("UserKnownHostsFile") == []:
            raise SshError(self.name, self._no_known_hosts_message())
        listed = known_hosts_files(config)
        if listed is not None:  # ssh skips the files that are not there; asyncssh fails
            options["known_hosts"] = existing(listed) or [os.devnull]  # none: trust no key
        keys = identity_files(config)
        if keys is not None:
            present = existing(keys)
            for missing in sorted(set(keys) - set(present)):
                log.info(
                    "backend '%s': IdentityFile %s does not exist; skipped, as ssh does",
                    self.name,
                    missing,
                )
            options["client_keys"] = present  # [] means ssh's default key files
        if t.ssh_config is not None:
            options["config"] = [str(t.ssh_config)]
        if t.user:
            options["username"] = t.user
        if t.port:
            options["port"] = t.port
        try:
            conn = await self._connecting(
                asyncssh.connect(t.host, client_factory=lambda: _Client(self), **options)
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SshError(self.name, await self._host_key_message()) from exc
        except asyncssh.PermissionDenied as exc:
            raise SshError(
                self.name,
                f"backend '{self.name}': SSH login to {t.address} was refused ({exc.reason}); "
                "check that your key is in the remote ~/.ssh/authorized_keys and loaded "
                "(ssh-add -l), or name it with IdentityFile in your ssh config"
                + (
                    ""
                    if self.interactive
                    else "; passwords can be typed only when the relay runs in a terminal"
                ),
            ) from exc
        except socket.gaierror as exc:
            raise SshError(
                self.name,
                f"backend '{self.name}': cannot resolve host {t.host!r}; check the name "
                "or the Host entry of your ssh config",
            ) from exc
        except (TimeoutError, asyncssh.TimeoutError) as exc:
            raise BackendTimeout(
                self.name, f"backend '{self.name}': no SSH answer from {t.address} in time"
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            if isinstance(exc, OSError) and exc.errno:
                why = os.strerror(exc.errno)  # asyncio's own text names no reason
            else:
                why = getattr(exc, "reason", None) or str(exc)
            raise SshError(
                self.name,
                f"backend '{self.name}': cannot connect to {t.address} over SSH ({why}); "
                "is the host up and sshd running?",
            ) from exc
        return conn

    def _no_known_hosts_message(self) -> str:
        t = self.target
        return (
            f"backend '{self.name}': the ssh config for {t.host} says UserKnownHostsFile "
            "none, which would accept any host key, and the relay never accepts a key "
            "silently. Point UserKnownHostsFile at a file (or drop the line for "
            f"~/.ssh/known_hosts), then trust the key by connecting once with 'ssh {t.host}'"
        )

    async def _host_key_message(self) -> str:
        """Say whether the host key is unknown or changed, with its fingerprint and the fix."""
        t = self.target
        config = [str(t.ssh_config)] if t.ssh_config else ()
        host, port, files = known_hosts_of(t)
        entry = host if port == 22 else f"[{host}]:{port}"
        shown = f"{t.host} ({host}:{port})" if host != t.host or port != 22 else t.host
        try:
            async with asyncio.timeout(self.timeouts.connect):  # the message must not hang
                key = await asyncssh.get_server_host_key(t.host, t.port or (), config=config)
            fingerprint = f"{key.get_algorithm()} {key.get_fingerprint()}" if key else "?"
        except (OSError, asyncssh.Error, TimeoutError):
            fingerprint = "?"
        recorded = False
        for path in files:
            with contextlib.suppress(OSError, ValueError, asyncssh.Error):
                recorded = recorded or bool(
                    asyncssh.read_known_hosts(path).match(host, host, port)[0]
                )
        where = " or ".join(files) or "known_hosts"
        if recorded:
            return (
                f"backend '{self.name}': the SSH host key of {shown} has CHANGED: it is not the "
                f"one recorded in {where}. Someone may be intercepting the connection, or the "
                f"host was reinstalled. Only if you know it was, remove the old key with "
                f"\"ssh-keygen -R '{entry}'\" and connect once with 'ssh {t.host}'"
            )
        return (
            f"backend '{self.name}': the SSH host key of {shown} is not in {where}, and the "
            f"relay never accepts a key silently. Its fingerprint is {fingerprint}: if that is "
            f"the host's, trust it by connecting once with 'ssh {t.host}' and answering yes"
        )

    async def on_terminal(self, ask: Callable[[str], str], prompt: str) -> str:
        """Ask the user; the connect timeout stands still meanwhile (see _connecting)."""
        loop = asyncio.get_running_loop()
        started = self._prompt_started = loop.time()
        try:
            return await asyncio.to_thread(ask, prompt)
        finally:
            self._prompt_started = None
            self._typing += loop.time() - started

    async def _connecting(
        self, connecting: Awaitable[asyncssh.SSHClientConnection]
    ) -> asyncssh.SSHClientConnection:
        """`connecting` within the connect timeout, not counting the time the user types."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(connecting)
        started, self._typing = loop.time(), 0.0
        try:
            while True:
                left = started + self.timeouts.connect + self._typing - loop.time()
                if self._prompt_started is not None:
                    left = max(left, 1.0)  # someone is typing: no hurry
                elif left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
