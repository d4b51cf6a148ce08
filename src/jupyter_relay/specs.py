"""Backend specifications: the `--backend NAME=URI` strings, parsed and validated.

Pure logic, no I/O beyond checking that named files exist. A spec string (or a
`[backends.NAME]` table of the config file) becomes a frozen `BackendSpec`
that the backend classes are built from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl

from yarl import URL

from .credentials import CredentialSource, Secret
from .errors import ConfigError

NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
KINDS = ("local", "jupyter", "gateway", "ssh", "hub")
# Kinds that serve kernels only (no files): never the primary.
KERNELS_ONLY = frozenset({"gateway"})

# Options a backend accepts, from its URI's query or its config-file table.
TLS_OPTIONS = ("ca_cert", "tls_server_name", "client_cert", "client_key")
TOKEN_OPTIONS = ("token", "token_file", "token_env")
SSH_OPTIONS = ("ssh_config", "jupyter", "jupyter_port", "start", "helper")
HUB_OPTIONS = ("server",)
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - a variable name, not a value
URL_OPTIONS = (*TOKEN_OPTIONS, *TLS_OPTIONS)
TABLE_OPTIONS = ("url", "headers", "root_dir", *URL_OPTIONS, *SSH_OPTIONS, *HUB_OPTIONS)


@dataclass(frozen=True)
class TlsSettings:
    """How to verify a backend's certificate and which one to present."""

    ca_cert: Path | None = None
    server_name: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class SshTarget:
    """Where an `ssh` backend logs in, and how it finds the Jupyter there."""

    host: str
    user: str | None = None
    port: int | None = None  # None: from ssh_config, else 22
    ssh_config: Path | None = None  # None: ~/.ssh/config
    jupyter: str = "jupyter"  # the remote command
    jupyter_port: int | None = None
    start: bool = False
    helper: bool = True  # run the relay's helper there (backends/far_side.py)

    @property
    def address(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


@dataclass(frozen=True)
class HubTarget:
    """Whose server on a JupyterHub: the user (None: the token's owner) and server name."""

    user: str | None = None
    server: str = ""  # "" is the user's default server
    start_server: bool = True  # start it when stopped (--start-server)


@dataclass(frozen=True)
class BackendSpec:
    """One named backend, as the user configured it."""

    name: str
    kind: str
    url: URL | None = None  # without credentials in the query
    token: CredentialSource = field(default_factory=CredentialSource)
    tls: TlsSettings = field(default_factory=TlsSettings)
    headers: tuple[tuple[str, str], ...] = ()
    root_dir: Path | None = None
    ssh: SshTarget | None = None
    hub: HubTarget | None = None

    @property
    def kernels_only(self) -> bool:
        return self.kind in KERNELS_ONLY

    def public_url(self) -> str:
        """The URL safe to show: no credentials."""
        if self.ssh is not None:
            return f"ssh://{self.ssh.address}"
        if self.url is None:
            return self.kind
        shown = str(self.url.with_user(None).with_password(None))
        if self.hub is not None:
            user = f"{self.hub.user}@" if self.hub.user else ""
            server = f"?server={self.hub.server}" if self.hub.server else ""
            return f"hub+{shown.replace('://', '://' + user, 1)}{server}"
        return f"gateway+{shown}" if self.kind == "gateway" else shown


def split_backend_arg(arg: str) -> tuple[str | None, str]:
    """Split `NAME=URI` into its parts; a bare URI has no name."""
    head, sep, tail = arg.partition("=")
    if sep and NAME_RE.fullmatch(head):
        return head, tail
    if sep and "://" not in head and "?" not in head and head:
        raise ConfigError(
            f"backend name {head!r} is not allowed: use lower-case letters, digits and _, "
            "starting with a letter (e.g. --backend gpu=http://...)"
        )
    return None, arg


def parse_backend(
    arg: str,
    *,
    table: Mapping[str, object] | None = None,
    defaults: TlsSettings | None = None,
    where: str = "--backend",
) -> BackendSpec:
    """Parse one `--backend` value, with options from a config table beneath it."""
    name, uri = split_backend_arg(arg.strip())
    return build_spec(name, uri, dict(table or {}), defaults or TlsSettings(), where)


def build_spec(
    name: str | None,
    uri: str,
    options: dict[str, object],
    defaults: TlsSettings,
    where: str,
) -> BackendSpec:
    """Validate a backend's URI and options into a `BackendSpec`."""
    for key in options:
        if key not in TABLE_OPTIONS:
            raise ConfigError(
                f"{where}: unknown backend option {key!r}; allowed: {', '.join(TABLE_OPTIONS)}"
            )
    uri = uri.strip()
    if not uri:
        raise ConfigError(f"{where}: empty backend URI; use 'local' or http(s)://host:port/")
    ssh: SshTarget | None = None
    hub: HubTarget | None = None
    if uri == "local" or uri.startswith("local?"):
        kind, url = "local", None
        query = dict(parse_qsl(uri.partition("?")[2], keep_blank_values=True))
        for key, value in query.items():
            if key != "root_dir":
                raise ConfigError(f"{where}: the local backend takes only root_dir=, not {key!r}")
            options.setdefault("root_dir", value)
    elif uri.lower().startswith("ssh://"):
        kind, url = "ssh", None
        ssh = _parse_ssh(uri, options, where)
    elif uri.lower().startswith(("hub+https://", "hub+http://")):
        kind = "hub"
        url, hub = _parse_hub(uri, options, where)
    else:
        kind, url = _parse_url(uri, options, where)
    if kind != "ssh":
        for key in SSH_OPTIONS:
            if options.get(key) not in (None, ""):
                raise ConfigError(f"{where}: {key}= is an option of ssh:// backends only")
    if kind != "hub" and options.get("server") not in (None, ""):
        raise ConfigError(f"{where}: server= is an option of hub+https:// backends only")
    token = _token_source(options, where)
    if kind == "hub" and token == CredentialSource():
        token = CredentialSource(env=HUB_TOKEN_ENV)
    name = name or kind
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: backend name {name!r} must match [a-z][a-z0-9_]*")
    return BackendSpec(
        name=name,
        kind=kind,
        url=url,
        token=token,
        tls=_tls_settings(options, defaults, where),
        headers=_headers(options.get("headers"), where),
        root_dir=_path(options, "root_dir", where, must_be_dir=True),
        ssh=ssh,
        hub=hub,
    )


def _parse_url(uri: str, options: dict[str, object], where: str) -> tuple[str, URL]:
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    base_scheme = scheme.split("+")[-1]
    kind = "jupyter"
    if scheme in ("gateway+http", "gateway+https"):
        kind, uri = "gateway", uri.partition("+")[2]
    elif base_scheme not in ("http", "https") or "+" in scheme:
        raise ConfigError(
            f"{where}: cannot read backend URI {_redact(uri)!r}; expected 'local', "
            "http(s)://host:port/base/?token=..., gateway+http(s)://host:port/, "
            "hub+https://[user@]host/ or ssh://[user@]host[:port]"
        )
    url = _read_url(uri, where, "http(s)://host:port/")
    if url.user or url.password:
        raise ConfigError(
            f"{where}: put credentials in token_file= or token_env=, not in the URL's user part"
        )
    _take_options(url, URL_OPTIONS, options, where, "backend URL")
    clean = url.with_query(None).with_fragment(None).with_path(_base(url), encoded=True)
    return kind, clean


_SENDABLE = re.compile(r"[!-~]+")


def _base(url: URL) -> str:
    """The URL's path as written (`/a%40b/` stays so: servers route on raw paths), ending in /."""
    path = url.raw_path or "/"
    return path if path.endswith("/") else path + "/"


def _read_url(uri: str, where: str, form: str) -> URL:
    """A backend URL with a host, or one line saying what is wrong and the form expected.

    A URL already in ASCII keeps its exact bytes (yarl would turn `%40` into `@`);
    one with spaces or other characters is quoted as a browser would.
    """
    try:
        url = URL(uri, encoded=True) if _SENDABLE.fullmatch(uri) else URL(uri)
    except ValueError as exc:
        raise ConfigError(f"{where}: malformed URL {_redact(uri)!r}: {exc}") from exc
    if not url.host:
        raise ConfigError(f"{where}: {_redact(uri)!r} has no host; use {form}")
    return url


def _take_options(
    url: URL, allowed: tuple[str, ...], options: dict[str, object], where: str, what: str
) -> None:
    """Move the URL's query into `options`, refusing any key not `allowed`."""
    for key, value in url.query.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown option {key!r} in {what}; allowed: {', '.join(allowed)}"
            )
        options[key] = value


def _parse_hub(uri: str, options: dict[str, object], where: str) -> tuple[URL, HubTarget]:
    """`hub+https://[user@]host[:port][/prefix/][?server=NAME&...]`."""
    url = _read_url(uri.partition("+")[2], where, "hub+https://[user@]host/")
    if url.password:
        raise ConfigError(
            f"{where}: no password in the hub URL; the relay uses a hub API token "
            f"(${HUB_TOKEN_ENV}, or token_file=)"
        )
    _take_options(url, (*HUB_OPTIONS, *URL_OPTIONS), options, where, "hub URL")
    server = str(options.get("server") or "")
    if server and not re.fullmatch(r"[A-Za-z0-9._~-]+", server):
        raise ConfigError(f"{where}: server={server!r} is not a server name")
    base = _base(url)
    clean = url.with_user(None).with_query(None).with_fragment(None).with_path(base, encoded=True)
    return clean, HubTarget(user=url.user or None, server=server)


def _parse_ssh(uri: str, options: dict[str, object], where: str) -> SshTarget:
    """`ssh://[user@]host[:port][?options]`: the host may be an alias of ~/.ssh/config."""
    url = _read_url(uri, where, "ssh://[user@]host[:port]")
    if url.password:
        raise ConfigError(
            f"{where}: no passwords in ssh:// URLs; the relay asks for one on the terminal, "
            "or use a key (ssh-agent, IdentityFile)"
        )
    if url.path not in ("", "/"):
        raise ConfigError(
            f"{where}: an ssh:// URL has no path; use ?jupyter_port=N to pick a server"
        )
    _take_options(url, (*SSH_OPTIONS, *URL_OPTIONS), options, where, "ssh URL")
    jupyter_port = options.get("jupyter_port")
    if jupyter_port not in (None, ""):
        try:
            jupyter_port = int(str(jupyter_port))
            if not 0 < jupyter_port < 65536:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"{where}: jupyter_port={jupyter_port} is not a port (1-65535)"
            ) from None
    start, helper = (_flag(options, key, default, where) for key, default in BOOLS)
    jupyter = str(options.get("jupyter") or "jupyter")
    return SshTarget(
        host=url.host or "",  # _read_url refused a URL without one
        user=url.user or None,
        port=url.explicit_port,
        ssh_config=_path(options, "ssh_config", where),
        jupyter=jupyter,
        jupyter_port=jupyter_port if isinstance(jupyter_port, int) else None,
        start=start,
        helper=helper,
    )


BOOLS = (("start", False), ("helper", True))


def _flag(options: Mapping[str, object], key: str, default: bool, where: str) -> bool:
    value = str(options.get(key, default)).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{where}: {key}={value} must be true or false")
    return value in ("true", "1", "yes")


def _token_source(options: Mapping[str, object], where: str) -> CredentialSource:
    given = [k for k in TOKEN_OPTIONS if options.get(k) not in (None, "")]
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of {', '.join(given)}")
    if "token" in given:
        return CredentialSource(literal=Secret(str(options["token"])))
    if "token_file" in given:
        path = _path(options, "token_file", where)
        return CredentialSource(file=path)
    if "token_env" in given:
        return CredentialSource(env=str(options["token_env"]))
    return CredentialSource()


def _tls_settings(options: Mapping[str, object], defaults: TlsSettings, where: str) -> TlsSettings:
    tls = replace(
        defaults,
        ca_cert=_path(options, "ca_cert", where) or defaults.ca_cert,
        client_cert=_path(options, "client_cert", where) or defaults.client_cert,
        client_key=_path(options, "client_key", where) or defaults.client_key,
    )
    server_name = options.get("tls_server_name")
    if server_name:
        tls = replace(tls, server_name=str(server_name))
    if tls.client_key and not tls.client_cert:
        raise ConfigError(f"{where}: client_key needs client_cert too")
    return tls


def _path(
    options: Mapping[str, object], key: str, where: str, *, must_be_dir: bool = False
) -> Path | None:
    value = options.get(key)
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if must_be_dir and not path.is_dir():
        raise ConfigError(f"{where}: {key}={path} is not a directory")
    if not must_be_dir and not path.is_file():
        raise ConfigError(f"{where}: {key}={path} does not exist or is not a file")
    return path


def _headers(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where}: headers must be a table of name = "value" pairs')
    out = []
    for key, val in value.items():
        if not re.fullmatch(r"[A-Za-z0-9-]+", str(key)) or not isinstance(val, str):
            raise ConfigError(f"{where}: header {key!r} must be a token name with a string value")
        if "\n" in val or "\r" in val:
            raise ConfigError(f"{where}: header {key!r} contains a line break")
        out.append((str(key), val))
    return tuple(out)


def _redact(uri: str) -> str:
    """Hide a token given in a URI before echoing it in an error."""
    return re.sub(r"(token=)[^&#]*", r"\1***", uri)
