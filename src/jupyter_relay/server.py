"""Running the relay: bind, start backends with progress, serve, shut down gracefully.

The listening socket is bound first, so a port in use fails before a local
Jupyter is started. On SIGINT/SIGTERM the relay stops accepting, closes
websockets with 1001, lets in-flight requests finish within
`shutdown_timeout`, then stops the backends it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from typing import TextIO

from aiohttp import web

from . import kept_token
from .app import make_app
from .backends.base import Backend, Progress
from .config import RelayConfig
from .errors import ConfigError
from .fast import FastServer, House
from .fast import client as fast_client
from .notify import notify
from .relay import Relay

log = logging.getLogger("jupyter_relay")


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket, or say in one line why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        hint = (
            "another program uses it; pick another with --port (0 picks a free one)"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {hint}") from exc
    sock.setblocking(False)
    return sock


def _keep_token(config: RelayConfig, progress: Progress) -> None:
    """A token made at this start is kept for the next (see `kept_token`)."""
    if not config.token_generated or config.token_keep is None or config.token is None:
        return
    try:
        kept_token.write(config.token_keep, config.token.value)
    except OSError as exc:
        progress(
            f"could not keep the token in {config.token_keep} ({exc.strerror or exc}); "
            "it lasts until the relay stops"
        )
    else:
        progress(f"made a new token, kept in {config.token_keep} for the next start")


def progress_printer(stream: TextIO) -> Progress:
    def progress(message: str) -> None:
        print(f"jupyter-relay: {message}", file=stream, flush=True)

    return progress


class RunningRelay:
    """A relay that is serving: its address, and how to stop it."""

    def __init__(self, relay: Relay, runner: web.AppRunner, host: str, fast: FastServer) -> None:
        self.relay = relay
        self.runner = runner
        self.host = host
        self.fast = fast

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def base_url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/"

    @property
    def url(self) -> str:
        return self.relay.url(self.host)

    async def stop(self) -> None:
        timeout = self.relay.config.shutdown_timeout
        await asyncio.gather(self.fast.shutdown(timeout), self.runner.cleanup())


async def start(config: RelayConfig, progress: Progress) -> RunningRelay:
    """Bind, start the backends, serve; raise a `RelayError` if any step fails."""
    sock = bind(config.ip, config.port)
    try:
        _keep_token(config, progress)
        relay = Relay(config, sock.getsockname()[1])
        await relay.start_backends(progress)
        # The relay's own answers: reached by the engine only, which logs every request.
        runner = web.AppRunner(
            make_app(relay),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=config.shutdown_timeout,
            keepalive_timeout=fast_client.KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        assert runner.server is not None
        relay.serve_house(House(runner.server))
        fast = FastServer(relay)
        fast.server = await asyncio.get_running_loop().create_server(fast, sock=sock)
    except BaseException:
        sock.close()
        raise
    wildcard = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
    host = wildcard.get(config.ip, config.ip)
    return RunningRelay(relay, runner, host, fast)


async def serve(config: RelayConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run until SIGINT/SIGTERM; return the exit status."""
    progress = progress_printer(err)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.create_task(start(config, progress))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Ctrl-C while a backend starts: cancelling stops what was started.
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            progress("stopped before the backends were ready")
            return 0
        stopping.cancel()
        running = starting.result()  # raises if a backend could not start
        await _checked(running.relay, config.list_timeout)
        _announce(running, config, out, err)
        backends = running.relay.backends.values()
        up = sum(1 for b in backends if b.last_health is not None and b.last_health.reachable)
        notify(
            "READY=1", f"STATUS=serving on port {running.port}; {up}/{len(backends)} backends up"
        )
        await stop.wait()
        notify("STOPPING=1", "STATUS=shutting down")
        progress("shutting down: closing websockets, finishing requests, stopping backends")
        await running.stop()
        progress("stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _checked(relay: Relay, seconds: float) -> None:
    """Each backend's health, asked now (within `seconds`), for the announcement."""

    async def check(backend: Backend) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await backend.check()

    await asyncio.gather(*(check(b) for b in relay.backends.values()))


def backend_line(backend: Backend, primary: bool) -> str:
    """`gpu (ssh, primary): up`, or down with why: one backend as the start announces it."""
    role = f"{backend.spec.kind}{', primary' if primary else ''}"
    health = backend.last_health
    if health is None:
        state = "not checked yet"
    elif health.reachable:
        state = "up"
    else:
        why = (health.error or "no answer").removeprefix(f"backend '{backend.name}': ")
        state = f"DOWN. {why} (requests to it are answered with this until it is back)"
    return f"{backend.name} ({role}): {state}"


def _announce(running: RunningRelay, config: RelayConfig, out: TextIO, err: TextIO) -> None:
    for name, backend in running.relay.backends.items():
        line = backend_line(backend, name == config.primary)
        print(f"jupyter-relay: serving {line}", file=err, flush=True)
    if config.token is None:
        print(
            "jupyter-relay: WARNING: authentication is disabled (--no-auth)", file=err, flush=True
        )
    print(
        "jupyter-relay: open this URL in a browser, or paste it into VS Code / PyCharm "
        "as an existing Jupyter server:",
        file=err,
        flush=True,
    )
    print(f"    {running.url}", file=out, flush=True)
