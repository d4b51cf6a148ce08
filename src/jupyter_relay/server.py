"""Running the relay: bind, start backends with progress, serve, shut down gracefully.

The listening socket (a TCP port, with TLS from --certfile or not, or a Unix
socket of mode 0600 from --sock) is bound first, so a port in use fails before a
local Jupyter is started. While the command serves, its server-info file
(`discovery`) lets `jupyter server list` find it. On SIGINT/SIGTERM the relay
removes that file, stops accepting, closes websockets with 1001, lets in-flight
requests finish within `shutdown_timeout`, then stops the backends it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import stat
import sys
from pathlib import Path
from typing import TextIO

from aiohttp import web

from . import __version__, discovery, kept_token
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


def bind_unix(path: Path) -> socket.socket:
    """Listen on a Unix socket only this user may open (0600), as jupyter server --sock."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(
                f"cannot listen on {path}: it exists and is not a socket; remove it or give "
                "another --sock"
            )
        if _listened(path):
            raise ConfigError(
                f"cannot listen on {path}: another program listens on it; give another --sock"
            )
        path.unlink()  # left behind by a server that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # never, even for an instant, open to others
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(mask)
    sock.setblocking(False)
    return sock


def _listened(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def tls_context(config: RelayConfig) -> ssl.SSLContext | None:
    """The server side of HTTPS from --certfile/--keyfile, or None without them."""
    if config.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot serve HTTPS with --certfile {config.certfile}"
            + (f" and --keyfile {config.keyfile}" if config.keyfile else "")
            + f": {getattr(exc, 'strerror', None) or exc}; give a PEM certificate and its "
            "private key (in the same file, or with --keyfile)"
        ) from exc
    return context


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
        return self.relay.base_url(self.host)

    @property
    def url(self) -> str:
        return self.relay.url(self.host)

    async def stop(self) -> None:
        timeout = self.relay.config.shutdown_timeout
        await asyncio.gather(self.fast.shutdown(timeout), self.runner.cleanup())
        if self.relay.config.sock is not None:
            with contextlib.suppress(FileNotFoundError):
                self.relay.config.sock.unlink()


async def start(config: RelayConfig, progress: Progress) -> RunningRelay:
    """Bind, start the backends, serve; raise a `RelayError` if any step fails."""
    context = tls_context(config)
    sock = bind(config.ip, config.port) if config.sock is None else bind_unix(config.sock)
    try:
        relay = Relay(config, sock.getsockname()[1] if config.sock is None else 0)
        await relay.start_backends(progress)
        # Kept once nothing can refuse the start: a backend that cannot start is one line.
        _keep_token(config, progress)
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
        loop = asyncio.get_running_loop()
        if config.sock is None:
            fast.server = await loop.create_server(fast, sock=sock, ssl=context)
        else:
            fast.server = await loop.create_unix_server(fast, sock=sock)
    except BaseException:
        sock.close()
        if config.sock is not None:
            config.sock.unlink(missing_ok=True)
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
        info = _advertise(running, progress)
        try:
            _announce(running, config, out, err)
            backends = running.relay.backends.values()
            up = sum(1 for b in backends if b.last_health is not None and b.last_health.reachable)
            where = f"port {running.port}" if config.sock is None else str(config.sock)
            notify("READY=1", f"STATUS=serving on {where}; {up}/{len(backends)} backends up")
            await stop.wait()
            notify("STOPPING=1", "STATUS=shutting down")
        finally:
            if info is not None:
                discovery.remove(info)
        progress("shutting down: closing websockets, finishing requests, stopping backends")
        await running.stop()
        progress("stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _checked(relay: Relay, seconds: float) -> None:
    """Each backend's health for the announcement: asked now (within `seconds`) of those
    whose start did not just ask it (a `jupyter` or `local` backend's does)."""

    async def check(backend: Backend) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await backend.check()

    await asyncio.gather(*(check(b) for b in relay.backends.values() if b.last_health is None))


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


def _advertise(running: RunningRelay, progress: Progress) -> Path | None:
    """Write the server-info file for `jupyter server list`; a failure is only a warning."""
    config = running.relay.config
    primary = running.relay.primary
    root = primary.spec.root_dir if primary is not None else None
    info = discovery.server_info(
        url=running.base_url,
        ip=config.ip,
        port=running.port,
        sock=str(config.sock) if config.sock is not None else "",
        secure=config.certfile is not None,
        token=config.token.value if config.token is not None else "",
        root_dir=str((root or Path.cwd()).absolute()),
        pid=os.getpid(),
        version=__version__,
    )
    try:
        return discovery.write(info)
    except OSError as exc:
        progress(
            f"WARNING: cannot write the server-info file ({exc}); `jupyter server list` will "
            "not show this relay. Set JUPYTER_RUNTIME_DIR to a directory you can write"
        )
        return None


def _announce(running: RunningRelay, config: RelayConfig, out: TextIO, err: TextIO) -> None:
    for name, backend in running.relay.backends.items():
        line = backend_line(backend, name == config.primary)
        print(f"jupyter-relay: serving {line}", file=err, flush=True)
    home = running.relay.port_proxy.home
    if home.backend is not None:  # not this machine: a change from a plain Jupyter's meaning
        print(f"jupyter-relay: /proxy/<port>/ leads to {home.describe()}", file=err, flush=True)
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
