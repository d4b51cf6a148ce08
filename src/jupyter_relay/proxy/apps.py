"""Named apps: processes the relay starts on first request and serves at `/apps/<name>/`.

An app starts when it is first asked for, on a free loopback port (or the
one configured), in its own session, told to die with the relay. It is ready
when its port accepts a connection; until then requests wait, for at most
its `timeout`. If it exits or never listens, the answer is a 503 that quotes
its last output lines and names its log. An app that exits later is started
again by the next request. All are stopped with the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..children import die_with_parent, log_tail, scrubbed_environment, stop_process
from ..errors import BackendStartError, NotFound
from .appspec import AppSpec
from .core import LOOPBACK_ADDRESSES
from .paths import parse_app
from .target import ProxyTarget, tcp_opener

log = logging.getLogger("jupyter_relay.apps")

STOP_GRACE = 5.0
POLL = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class App:
    """One named app: its process, its state, and the target that reaches it."""

    def __init__(
        self,
        spec: AppSpec,
        connect_timeout: float,
        hide_env: frozenset[str] = frozenset(),
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.hide_env = hide_env  # variables backends' tokens come from
        self.secrets = secrets
        self.state = "stopped"
        self.error: str | None = None
        self.port: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.target: ProxyTarget | None = None
        self.log_path: Path | None = None
        self._starting: asyncio.Task[ProxyTarget] | None = None
        self._workdir: Path | None = None
        self._closed = False  # stopped with the relay: never started again

    @property
    def name(self) -> str:
        return self.spec.name

    def ready(self) -> ProxyTarget | None:
        """The target while the app runs; None when it must be (re)started first."""
        if self.state == "running" and self.proc is not None and self.proc.returncode is None:
            return self.target
        return None

    async def ensure(self) -> ProxyTarget:
        """Start the app unless it runs; every waiting request shares one start."""
        if self._closed:
            raise BackendStartError(
                self.name, f"app '{self.name}' is not started: the relay is shutting down"
            )
        target = self.ready()
        if target is not None:
            return target
        if self.state == "running" and self.proc is not None:
            log.warning(
                "app '%s' exited with code %s; starting it again", self.name, self.proc.returncode
            )
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> ProxyTarget:
        await self._reap()
        spec = self.spec
        port = spec.port or free_port()
        self.port, self.state, self.error = port, "starting", None
        if spec.port and await self._listening(port):
            # Something else holds the fixed port: "ready" would proxy to a stranger.
            raise self._failed(
                f"cannot start: port {port} (its 'port') is already in use by another "
                f"process; stop that process, or set another 'port' in [apps.{self.name}] "
                "(0 for a free one at each start)",
                quote_log=False,
            )
        argv = [spec.render(arg, port) for arg in spec.command]
        env = scrubbed_environment(os.environ, self.hide_env, self.secrets())
        env.update({k: spec.render(v, port) for k, v in spec.environment})
        self._workdir = Path(tempfile.mkdtemp(prefix=f"jupyter-relay-app-{self.name}-"))
        self.log_path = self._workdir / "output.log"
        log.info("app '%s': starting %s on port %d", self.name, " ".join(argv), port)
        started = time.monotonic()
        try:
            with self.log_path.open("wb") as out:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )
        except OSError as exc:
            raise self._failed(
                f"cannot run {argv[0]!r} ({exc.strerror or exc}); check 'command' in "
                f"[apps.{self.name}] of the config file"
            ) from exc
        while not await self._listening(port):
            if self.proc.returncode is not None:
                raise self._failed(
                    f"exited with code {self.proc.returncode} before listening on port {port}"
                )
            if time.monotonic() - started > spec.timeout:
                await stop_process(self.proc, STOP_GRACE, group=True)
                raise self._failed(
                    f"did not listen on port {port} within {spec.timeout:g} s (its 'timeout'); "
                    "does its command use {port}?"
                )
            await asyncio.sleep(POLL)
        prefix = f"/apps/{self.name}"
        self.target = ProxyTarget(
            prefix,
            f"app '{self.name}' (port {port})",
            opener=tcp_opener(lambda: LOOPBACK_ADDRESSES, port, self.connect_timeout),
            host_header=f"localhost:{port}",
            prefix=prefix,
            relative=not spec.absolute_url,
            origins=[f"http://127.0.0.1:{port}", f"http://[::1]:{port}"],
        )
        self.state = "running"
        log.info(
            "app '%s' is ready on port %d (%.1f s; log: %s)",
            self.name,
            port,
            time.monotonic() - started,
            self.log_path,
        )
        return self.target

    async def _listening(self, port: int) -> bool:
        for address in LOOPBACK_ADDRESSES:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    _, writer = await asyncio.open_connection(address, port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
        return False

    def _failed(self, what: str, *, quote_log: bool = True) -> BackendStartError:
        self.state, self.error = "failed", f"app '{self.name}' {what}"
        if not quote_log:
            return BackendStartError(self.name, self.error)
        tail = log_tail(self.log_path, 10)
        output = f"; its last output:\n{tail}" if tail else "; it printed nothing"
        return BackendStartError(
            self.name, f"app '{self.name}' {what}{output}\n(log: {self.log_path})"
        )

    async def _reap(self) -> None:
        """Forget a previous run: its process (if any is left) and its log."""
        if self.proc is not None:
            await stop_process(self.proc, STOP_GRACE, group=True)
            self.proc = None
        if self._workdir is not None and self.state != "failed":
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def stop(self) -> None:
        """Stop its whole process group; a second call (or a call racing one) does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        if self.proc is not None:
            await stop_process(self.proc, STOP_GRACE, group=True)
        self.target = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.state = "stopped"

    def describe(self) -> dict[str, Any]:
        running = self.ready() is not None
        exited = self.proc is not None and self.proc.returncode is not None
        return {
            "name": self.name,
            "url": self.spec.base_url,
            "state": "stopped" if exited and self.state == "running" else self.state,
            "pid": self.proc.pid if self.proc is not None and running else None,
            "port": self.port if running else None,
            "error": (
                f"exited with code {self.proc.returncode}"
                if exited and self.state == "running" and self.proc is not None
                else self.error
            ),
        }


class Apps:
    """The configured apps, by name."""

    def __init__(
        self,
        specs: tuple[AppSpec, ...],
        connect_timeout: float,
        hide_env: frozenset[str] = frozenset(),
        secrets: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.apps = {spec.name: App(spec, connect_timeout, hide_env, secrets) for spec in specs}

    def fast_target(self, raw_path: str) -> ProxyTarget | None:
        parsed = parse_app(raw_path)
        if parsed is None or parsed.bare:
            return None
        app = self.apps.get(parsed.name)
        return app.ready() if app is not None else None

    async def target(self, raw_path: str) -> tuple[ProxyTarget | None, str]:
        """(target, "") to forward to; (None, location) to redirect to the slash form."""
        parsed = parse_app(raw_path)
        app = self.apps.get(parsed.name) if parsed is not None else None
        if parsed is None or app is None:
            known = ", ".join(f"/apps/{n}/" for n in self.apps) or "none configured"
            raise NotFound(
                f"{raw_path} is not an app of this relay (apps: {known}); apps are "
                "[apps.NAME] tables in the config file"
            )
        if parsed.bare:
            return None, parsed.prefix + "/"
        return await app.ensure(), ""

    async def stop(self) -> None:
        await asyncio.gather(*(app.stop() for app in self.apps.values()), return_exceptions=True)

    def describe(self) -> list[dict[str, Any]]:
        return [app.describe() for app in self.apps.values()]
