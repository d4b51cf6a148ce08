"""The composition root: the running relay's state, its backends, and where requests go.

`Relay` builds the backends, the mixer, the port proxy, the apps and the
Colab bridge from the configuration, starts and stops the backends, and
routes each request along the road `routes.TABLE` names for its path. It
holds the meter the engine counts with, and the metrics registry.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from urllib.parse import quote

from . import auth, colab, gate, metrics, routes
from .backends import Backend, Timeouts, build_backend
from .backends.base import Progress, Target, Upstream
from .config import RelayConfig
from .errors import BackendError, NotFound
from .health_history import HealthHistory
from .logs import add_secret, known_secrets
from .mixer import Mixer, held
from .mixer.names import ID_RE
from .proxy.apps import Apps
from .proxy.core import PortProxy
from .routes import Forward, Later, Redirect, Road
from .start_page import StartPage

SPEC_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")


def token_hint(config: RelayConfig) -> str:
    """Where the token comes from, as the refusals say it (never the token itself)."""
    if config.token_keep is not None:
        return (
            f" The token is kept in {config.token_keep} (the same at every start; "
            "--new-token replaces it)."
        )
    return " The token is the one given with --token or --token-file."


class NoFiles:
    """The primary when there is none (gateways only): every file path is a clear 404."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.gateways = ", ".join(backends)

    @property
    def name(self) -> str:
        return "files"

    def upstream(self) -> Upstream:
        raise NotFound(
            f"this path is not served: this relay has only kernel backends ({self.gateways}), "
            "which hold no files. Add one that does, e.g. --backend local"
        )

    def explain(self, error: BackendError) -> BackendError:
        return error

    async def answered(self, status: int, location: str | None) -> BackendError | None:
        return None


class Relay:
    """The running relay: configuration, backends, and the parts that serve requests."""

    def __init__(self, config: RelayConfig, port: int) -> None:
        self.config = config
        self.port = port
        self.cookie_name = auth.cookie_name(port)
        # The scheme clients use: the house sees their heads over a socket pair, in clear.
        self.scheme = config.scheme
        timeouts = Timeouts(
            connect=config.connect_timeout,
            response=config.backend_timeout,
            start=config.start_timeout,
        )
        self.backends: dict[str, Backend] = {
            spec.name: build_backend(spec, timeouts) for spec in config.backends
        }
        self.mixer = Mixer(
            self.backends,
            config.primary,
            list_timeout=config.list_timeout,
            timeout=config.backend_timeout,
            held_dir=config.state_dir or held.default_dir(),
            kernel_start_timeout=config.kernel_start_timeout,
            start_env=config.kernel_env,
        )
        self.bridge = colab.Bridge(
            colab.BridgeSettings(
                ip=config.ip,
                port=port,
                scheme=config.scheme,
                sock=config.sock,
                token=config.token.value if config.token is not None else None,
                cookie_name=self.cookie_name,
                backend_timeout=config.backend_timeout,
            )
        )
        self.port_proxy = PortProxy(
            config.proxy_allow,
            config.proxy_deny_ports,
            self.backends,
            config.connect_timeout,
            primary=self.primary,
        )
        self.apps = Apps(
            config.apps,
            config.connect_timeout,
            hide_env=frozenset(b.token.env for b in config.backends if b.token.env),
            secrets=known_secrets,
        )
        self.policy = gate.Policy(
            token=config.token.value if config.token is not None else None,
            cookie_name=self.cookie_name,
            allow_origins=config.allow_origins,
            allowed_hosts=frozenset(config.allow_hosts) if config.loopback else None,
            token_hint=token_hint(config),
            metrics_public=config.metrics_public,
        )
        # What the engine counts (`fast.server.Metering`), and the registry /relay/metrics shows.
        self.meter = metrics.Meter()
        self.metrics = metrics.make_registry(self.meter, self.backends, self.port_proxy)
        self.started_at = time.monotonic()
        self.health_history = HealthHistory()  # for the status page's chart
        primary = self.primary
        self._primary = Forward(
            primary if primary is not None else NoFiles(self.backends), Road.PRIMARY
        )
        self.start_page = StartPage(primary)
        self._house = self._primary  # until `serve_house`
        if config.token is not None:
            add_secret(config.token.value)
            add_secret(auth.cookie_value(config.token.value))

    @property
    def primary(self) -> Backend | None:
        """The backend that holds the files; None when there are only gateways."""
        if self.config.primary is None:
            return None
        return self.backends[self.config.primary]

    async def start_backends(self, progress: Progress) -> None:
        """Start every backend at once; if one cannot start, stop the rest and raise."""
        try:
            results = await asyncio.gather(
                *(b.start(progress) for b in self.backends.values()), return_exceptions=True
            )
        except BaseException:  # cancelled (Ctrl-C): stop what had started
            await asyncio.shield(self.stop_backends())
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop_backends()
            raise failures[0]

    async def stop_backends(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.backends.values()), return_exceptions=True)

    def route(self, path: str, raw_path: str, query: str, method: str = "GET") -> Forward | Later:
        """Where the engine sends a request at canonical `path` (`raw_path`: as sent).

        Decided now when it can be (the house, the primary, a kernel whose owner
        is known, a port-proxy target allowed without DNS, a running app);
        otherwise a `Later` the engine awaits with the connection paused.
        """
        match = routes.classify(path)
        road = match.road
        if road is Road.PRIMARY:
            return self._primary
        if road is Road.HOME:
            if method not in ("GET", "HEAD") or self.primary is None:
                return self._primary
            return functools.partial(self._home, query)
        if road is Road.HOUSE:
            return self._house
        if road is Road.KERNEL:
            kernel = match.params["kernel_id"]
            owner = self.mixer.kernel_owner.get(kernel)
            if owner is not None:
                return Forward(self.backends[owner], Road.KERNEL)
            return functools.partial(self._kernel_owner, kernel)
        if road is Road.KERNELSPEC_FILE:
            return functools.partial(self._spec_file, match.params["name"], raw_path)
        # The port proxy reads its prefix as the client spelled it (`/proxy/127.0.0.1%3A8050/`
        # is no form), and checks it before anything is dialled.
        if road is Road.PORT:
            passed = self.port_proxy.on_primary(raw_path)  # a hub's, a remote Jupyter's own
            if passed is not None:
                return Forward(passed, Road.PRIMARY)
            target = self.port_proxy.fast_target(raw_path)
            if target is not None:
                return Forward(target, Road.PORT)
            return functools.partial(self._port, raw_path)
        app = self.apps.fast_target(raw_path)
        if app is not None:
            return Forward(app, Road.APP)
        return functools.partial(self._app, raw_path, query)

    async def _home(self, query: str) -> Forward | Redirect:
        """`/`: to JupyterLab where the primary serves it (else the Notebook's tree), as
        `jupyter lab` does; the primary's own `/` where it serves neither."""
        page = await self.start_page.find()
        if page is None:
            return self._primary
        return Redirect(page + ("?" + query if query else ""), 302)

    async def _kernel_owner(self, kernel: str) -> Forward:
        if not ID_RE.fullmatch(kernel):
            raise NotFound(f"no kernel {kernel!r}: not a Jupyter id")
        return Forward(self.backends[await self.mixer.kernel_owner_of(kernel)], Road.KERNEL)

    async def _spec_file(self, name: str, raw_path: str) -> Forward:
        if not SPEC_NAME_RE.fullmatch(name):
            raise NotFound(f"no kernelspec {name!r}")
        backend, own = await self.mixer.spec_owner(name)
        rest = raw_path[len(f"/kernelspecs/{name}/") :]
        return Forward(backend, Road.KERNELSPEC_FILE, f"/kernelspecs/{own}/{rest}")

    async def _port(self, raw_path: str) -> Forward:
        return Forward(await self.port_proxy.target(raw_path), Road.PORT)

    async def _app(self, raw_path: str, query: str) -> Forward | Redirect:
        target, location = await self.apps.target(raw_path)
        if target is None:
            return Redirect(location + ("?" + query if query else ""))
        return Forward(target, Road.APP)

    @property
    def backend_timeout(self) -> float:
        return self.config.backend_timeout

    @property
    def house(self) -> Forward:
        """The relay's own answers (and the gate's refusals): the aiohttp application."""
        return self._house

    def serve_house(self, house: Target) -> None:
        """Start sending the relay's own paths to `house` (the aiohttp application)."""
        self._house = Forward(house, Road.HOUSE)

    def base_url(self, host: str) -> str:
        """Where clients reach the relay: `scheme://host:port/`, or its Unix socket as
        jupyter_server writes one (`http+unix://%2Fpath%2Fto.sock/`)."""
        if self.config.sock is not None:
            return f"http+unix://{quote(str(self.config.sock), safe='')}/"
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.port}/"

    def url(self, host: str) -> str:
        base = self.base_url(host)
        if self.config.token is None:
            return base
        return f"{base}?token={self.config.token.value}"
