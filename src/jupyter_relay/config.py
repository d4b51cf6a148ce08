"""The relay's configuration: flags over environment over file, parsed once.

Every relay-level setting is declared once in `settings.SETTINGS`; the
command-line flags, the `JUPYTER_RELAY_*` variables and the TOML keys are all
derived from that table, so the three sources cannot drift apart. The result is a frozen
`RelayConfig`; anything unknown or malformed is refused with one line that
names the key and what it allows.
"""

from __future__ import annotations

import getpass
import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_config_dir

from . import kept_token
from .credentials import Secret
from .errors import ConfigError
from .mixer.start_env import relay_env
from .proxy.allow import Allowlist, parse_port_ranges
from .proxy.appspec import AppSpec, parse_apps
from .settings import (
    COLAB_ORIGIN,
    ENV_PREFIX,
    EXTRA_ENV,
    FILE_KEYS,
    SETTINGS,
    SETTINGS_BY_KEY,
    Setting,
)
from .specs import BackendSpec, TlsSettings, parse_backend


@dataclass(frozen=True)
class RelayConfig:
    """Everything the relay needs to run, validated."""

    ip: str
    port: int
    token: Secret | None  # None: authentication disabled
    token_generated: bool  # made at this start (and kept, unless token_keep is None)
    # Where the token is kept between starts (None: it came from --token or --token-file);
    # `server.start` writes it there when it was made at this start.
    token_keep: Path | None
    allow_origins: tuple[str, ...]
    backends: tuple[BackendSpec, ...]
    primary: str | None  # None: only gateways, no backend holds files
    connect_timeout: float
    backend_timeout: float
    list_timeout: float
    state_dir: Path | None  # None: Jupyter's runtime directory
    start_timeout: float
    shutdown_timeout: float
    log_level: str
    proxy_allow: Allowlist = field(default_factory=lambda: Allowlist.parse(["loopback"]))
    proxy_deny_ports: tuple[tuple[int, int], ...] = ()
    apps: tuple[AppSpec, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    sock: Path | None = None  # a Unix socket to listen on, instead of ip:port
    certfile: Path | None = None  # HTTPS with this certificate
    keyfile: Path | None = None

    @property
    def scheme(self) -> str:
        """How clients reach the relay: "https" with a certificate, else "http"."""
        return "https" if self.certfile is not None else "http"

    metrics_public: bool = False  # /relay/metrics without the token
    kernel_start_timeout: float = 600.0
    # The `env` of kernel starts on gateways, from the relay's environment (start_env.py).
    # Not in repr: a KERNEL_* variable may hold something private.
    kernel_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def loopback(self) -> bool:
        """Listening on loopback only: then a request's Host must name this machine."""
        return _is_loopback(self.ip)


def default_config_path(env: Mapping[str, str]) -> Path:
    """`jupyter-relay.toml` in Jupyter's config directory (`jupyter --config-dir`).

    `env` is the environment the relay was given (a test's, or `os.environ`); its
    `JUPYTER_CONFIG_DIR` wins, and otherwise jupyter_core's own rules decide.
    """
    given = env.get("JUPYTER_CONFIG_DIR")
    return Path(given or jupyter_config_dir()) / "jupyter-relay.toml"


def load_config(
    flags: Mapping[str, Any],
    backend_args: Sequence[str],
    env: Mapping[str, str],
    config_path: str | None = None,
) -> RelayConfig:
    """Merge defaults < file < environment < flags into a `RelayConfig`.

    `flags` holds only the flags the user gave (text values, lists for
    repeatable ones); `backend_args` the `--backend` values.
    """
    for name in env:
        if (
            name.startswith(ENV_PREFIX)
            and name not in EXTRA_ENV
            and name not in {s.env for s in SETTINGS}
        ):
            allowed = ", ".join(sorted([s.env for s in SETTINGS] + sorted(EXTRA_ENV)))
            raise ConfigError(f"unknown environment variable {name}; known: {allowed}")

    explicit = config_path or env.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit).expanduser() if explicit else default_config_path(env)
    file_values, file_backends, file_apps = _read_file(path, required=bool(explicit))

    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    for key, raw in file_values.items():
        values[key] = _parse_value(SETTINGS_BY_KEY[key], raw, f"{path}: {key}")
    for setting in SETTINGS:
        if setting.env in env:
            raw_env: Any = env[setting.env]
            if setting.is_list:
                raw_env = [part for part in raw_env.replace(",", " ").split() if part]
            values[setting.key] = _parse_value(setting, raw_env, setting.env)
    for key, raw in flags.items():
        setting = SETTINGS_BY_KEY[key]
        values[key] = _parse_value(setting, raw, setting.flag)

    tls = TlsSettings(
        ca_cert=_existing(values["ca_cert"], "ca_cert"),
        server_name=values["tls_server_name"],
        client_cert=_existing(values["client_cert"], "client_cert"),
        client_key=_existing(values["client_key"], "client_key"),
    )
    backends = _backends(backend_args, env, file_backends, tls, path)
    proxy_port = env.get("JUPYTER_PROXY_PORT", "").strip()
    port_given = "port" in given(flags, env, file_values)
    if proxy_port and not port_given and backends[0].kind == "hub" and seed_hub_backend(env):
        values["port"] = _parse_value(SETTINGS_BY_KEY["port"], proxy_port, "JUPYTER_PROXY_PORT")
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"two backends are named {duplicates[0]!r}; give each its own name: --backend NAME=URI"
        )
    if values["start_server"] == "never":
        backends = [
            replace(b, hub=replace(b.hub, start_server=False)) if b.hub else b for b in backends
        ]
    primary = _primary(values["primary"], backends)

    token, generated, keep = _relay_token(values, env)
    if token is None and not _is_loopback(values["ip"]):
        raise ConfigError(
            f"refusing to listen on {values['ip']} without a token: anyone who can reach it "
            "could run code. Drop --no-auth, or listen on 127.0.0.1"
        )
    sock, certfile, keyfile = _listening(values, given(flags, env, file_values))
    origins = list(values["allow_origin"])
    if values["colab"]:
        origins.append(COLAB_ORIGIN)
    return RelayConfig(
        ip=values["ip"],
        port=values["port"],
        token=token,
        token_generated=generated,
        token_keep=keep,
        allow_origins=tuple(dict.fromkeys(origins)),
        backends=tuple(backends),
        primary=primary,
        connect_timeout=values["connect_timeout"],
        backend_timeout=values["backend_timeout"],
        list_timeout=values["list_timeout"],
        state_dir=Path(values["state_dir"]).expanduser() if values["state_dir"] else None,
        start_timeout=values["start_timeout"],
        shutdown_timeout=values["shutdown_timeout"],
        log_level=values["log_level"],
        proxy_allow=Allowlist.parse(values["proxy_allow"]),
        proxy_deny_ports=parse_port_ranges(values["proxy_deny_port"]),
        apps=parse_apps(file_apps, str(path)),
        allow_hosts=tuple(dict.fromkeys(values["allow_host"])),
        sock=sock,
        certfile=certfile,
        keyfile=keyfile,
        metrics_public=values["metrics_public"],
        kernel_start_timeout=values["kernel_start_timeout"],
        kernel_env=relay_env(env, env.get("KERNEL_USERNAME") or getpass.getuser()),
    )


def given(flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any]) -> set[str]:
    """The settings the user gave, by any of the three means."""
    return {s.key for s in SETTINGS if s.key in flags or s.env in env or s.key in file}


def _listening(
    values: Mapping[str, Any], explicit: set[str]
) -> tuple[Path | None, Path | None, Path | None]:
    """The Unix socket and the certificate files, checked against each other."""
    certfile = _existing(values["certfile"], "certfile")
    keyfile = _existing(values["keyfile"], "keyfile")
    if keyfile is not None and certfile is None:
        raise ConfigError("--keyfile needs --certfile: give the certificate the key belongs to")
    if values["sock"] is None:
        return None, certfile, keyfile
    if not values["sock"].strip():
        raise ConfigError("--sock is empty; give the path of the Unix socket to listen on")
    if "port" in explicit:
        raise ConfigError(
            "give --sock or --port, not both: on a Unix socket the relay listens on no TCP port"
        )
    if certfile is not None:
        raise ConfigError(
            "give --sock or --certfile, not both: the relay serves plain HTTP on a Unix "
            "socket, which only you can open (mode 0600)"
        )
    return Path(values["sock"]).expanduser().absolute(), None, None


def _primary(chosen: str | None, backends: list[BackendSpec]) -> str | None:
    """The backend that holds the files: the one chosen, else the first that can.

    A gateway serves kernels only; with nothing but gateways there is no primary
    and the relay serves only the kernel APIs.
    """
    if chosen is None:
        return next((b.name for b in backends if not b.kernels_only), None)
    spec = next((b for b in backends if b.name == chosen), None)
    if spec is None:
        known = ", ".join(b.name for b in backends)
        raise ConfigError(f"--primary {chosen!r} is not a backend; known: {known}")
    if spec.kernels_only:
        raise ConfigError(
            f"--primary {chosen!r} is a {spec.kind} backend, which serves kernels only; "
            "make a local or jupyter backend the primary"
        )
    return chosen


def _parse_value(setting: Setting, raw: Any, where: str) -> Any:
    try:
        if setting.is_list:
            items = raw if isinstance(raw, list) else [raw]
            return tuple(setting.parse(str(item)) for item in items)
        if setting.is_flag and isinstance(raw, bool):
            return raw
        if isinstance(raw, (list, dict)):
            raise ValueError("must be a single value")
        if isinstance(raw, bool) and not setting.is_flag:
            raise ValueError(f"must not be true or false (got {raw})")
        return setting.parse(str(raw))
    except ValueError as exc:
        # "port must be a whole number (got 'eighty')"; other words after a colon.
        text = str(exc)
        raise ConfigError(
            f"{where} {text}" if text.startswith("must") else f"{where}: {text}"
        ) from exc


def _read_file(
    path: Path, *, required: bool
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(settings, [backends.*] tables, [apps.*] tables) of a config file."""
    if not path.is_file():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return {}, {}, {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    apps = data.pop("apps", {})
    backends = data.pop("backends", {})
    if not isinstance(backends, dict) or not all(isinstance(v, dict) for v in backends.values()):
        raise ConfigError(f"{path}: 'backends' must hold tables like [backends.NAME]")
    values = {}
    for key, raw in data.items():
        if key not in FILE_KEYS:
            allowed = ", ".join(sorted([*FILE_KEYS, "backends", "apps"]))
            raise ConfigError(f"{path}: unknown key {key!r}; allowed: {allowed}")
        values[FILE_KEYS[key]] = raw
    return values, backends, apps


def _backends(
    args: Sequence[str],
    env: Mapping[str, str],
    tables: Mapping[str, Mapping[str, Any]],
    tls: TlsSettings,
    path: Path,
) -> list[BackendSpec]:
    env_args = env.get(ENV_PREFIX + "BACKENDS", "").split()
    if args or env_args:
        where = "--backend" if args else ENV_PREFIX + "BACKENDS"
        specs = []
        for arg in args or env_args:
            name = arg.partition("=")[0] if "=" in arg.partition("://")[0] else None
            table = dict(tables.get(name, {})) if name else {}
            table.pop("url", None)
            specs.append(parse_backend(arg, table=table, defaults=tls, where=where))
        return specs
    if tables:
        specs = []
        for name, entry in tables.items():
            options = dict(entry)
            uri = str(options.pop("url", "local"))
            specs.append(
                parse_backend(
                    f"{name}={uri}", table=options, defaults=tls, where=f"{path}: [backends.{name}]"
                )
            )
        return specs
    seed = seed_hub_backend(env)
    if seed is not None:
        return [parse_backend(seed, defaults=tls, where="JUPYTER_SERVER_IP_OR_NAME and co.")]
    return [parse_backend("local", defaults=tls)]


# The environment of Bright's jupyter-dev-server (the seed 004), read when no backend is given.
SEED_ENV = ("JUPYTER_SERVER_IP_OR_NAME", "JUPYTER_USERNAME", "JUPYTER_CLUSTER_CA_CERT")


def seed_hub_backend(env: Mapping[str, str]) -> str | None:
    """The hub backend the seed's variables describe, or None when they are not set."""
    host = env.get("JUPYTER_SERVER_IP_OR_NAME", "").strip()
    if not host:
        return None
    user = env.get("JUPYTER_USERNAME", "").strip()
    port = env.get("JUPYTER_SERVER_PORT", "8000").strip() or "8000"
    shown = f"[{host}]" if ":" in host else host
    query = [f"tls_server_name={env.get('JUPYTER_SERVER_NAME', 'jupyterhub').strip()}"]
    ca = env.get("JUPYTER_CLUSTER_CA_CERT", "").strip()
    if ca:
        query.append(f"ca_cert={ca}")
    who = f"{user}@" if user else ""
    return f"hub=hub+https://{who}{shown}:{port}/?{'&'.join(query)}"


def _relay_token(
    values: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[Secret | None, bool, Path | None]:
    """(the token, whether it is new, where it is kept between starts)."""
    if values["no_auth"]:
        return None, False, None
    if values["token"] is not None and values["token_file"] is not None:
        raise ConfigError("give --token or --token-file, not both")
    if values["token_file"] is not None:
        file = Path(values["token_file"]).expanduser()
        try:
            text = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {file}: {exc.strerror or exc}") from exc
        if not text:
            raise ConfigError(f"--token-file {file} is empty")
        return Secret(text), False, None
    if values["token"] is not None:
        if not values["token"]:
            raise ConfigError("the token is empty; to run without a token use --no-auth")
        return Secret(values["token"]), False, None
    keep = kept_token.path(env)
    kept = None if values["new_token"] else kept_token.read(keep)
    if kept is not None:
        return Secret(kept), False, keep
    return Secret(kept_token.new()), True, keep


def _existing(value: str | None, key: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"--{key.replace('_', '-')} {path} does not exist or is not a file")
    return path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
