"""Every relay-level setting, declared once: its key, parser, default and help.

The command-line flags (`cli.py`), the `JUPYTER_RELAY_*` variables and the TOML keys
(`config.py`) are all derived from `SETTINGS`, so the three cannot drift apart.
The parsers turn a setting's text into its value or raise `ValueError` with words
a user can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from .proxy.allow import Allowlist, parse_port_ranges

ENV_PREFIX = "JUPYTER_RELAY_"
COLAB_ORIGIN = "https://colab.research.google.com"


def _port(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"must be a whole number (got {text!r})") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"must be 0-65535, 0 picking a free port (got {text!r})")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"must be a number of seconds, like 30 or 2.5 (got {text!r})") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds (got {text!r})")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false (got {text!r})")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)} (got {text!r})")
        return lowered

    return parse


def _log_level(text: str) -> str:
    lowered = text.lower()
    if lowered not in ("debug", "info", "warning", "error"):
        raise ValueError(f"must be one of debug, info, warning, error (got {text!r})")
    return lowered


def _origin(text: str) -> str:
    url = URL(text.strip().rstrip("/"))
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/"):
        raise ValueError(f"{text!r} is not an origin like https://example.org[:port]")
    if url.query_string or url.fragment or url.user:
        raise ValueError(f"{text!r} is not an origin like https://example.org[:port]")
    return str(url.origin()).lower()


def _host(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if name != "*" and not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]", name):
        raise ValueError(f"{text!r} is not a host name like jupyter.example.org (or '*')")
    return name.strip("[]")


def _proxy_entry(text: str) -> str:
    Allowlist.parse([text])
    return text.strip()


def _port_range(text: str) -> str:
    parse_port_ranges([text])
    return text.strip()


@dataclass(frozen=True)
class Setting:
    """One relay-level setting, with the parser for its text form."""

    key: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = ""
    is_list: bool = False
    is_flag: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("ip", str, "127.0.0.1", "address to listen on", "ADDR"),
    Setting("port", _port, 8765, "port to listen on; 0 picks a free one", "PORT"),
    Setting(
        "sock",
        str,
        None,
        "listen on this Unix socket (mode 0600) instead of a TCP port, as jupyter server "
        "--sock does; the URL is then http+unix://...; not with --port",
        "PATH",
    ),
    Setting(
        "certfile",
        str,
        None,
        "serve HTTPS with this certificate (PEM, its chain after it); the cookie is then Secure",
        "FILE",
    ),
    Setting("keyfile", str, None, "the private key of --certfile, if not in that file", "FILE"),
    Setting("token", str, None, "the relay's token (prefer --token-file: flags show in ps)", "T"),
    Setting("token_file", str, None, "read the relay's token from this file", "FILE"),
    Setting(
        "new_token",
        _bool,
        False,
        "replace the kept token with a new one (without --token or --token-file the relay "
        "keeps its token in <Jupyter data dir>/jupyter-relay/token, mode 0600, and uses "
        "it again at the next start, so a server saved in an IDE keeps working)",
        is_flag=True,
    ),
    Setting(
        "no_auth", _bool, False, "disable the token (refused unless on loopback)", is_flag=True
    ),
    Setting(
        "allow_origin",
        _origin,
        (),
        "let pages of this browser origin call the relay (credentialed CORS, preflights, "
        "websockets), as a web-hosted notebook frontend does (repeatable)",
        "ORIGIN",
        is_list=True,
    ),
    Setting(
        "allow_host",
        _host,
        (),
        "on loopback, also answer requests whose Host is this name, for a proxy of your own "
        "in front of the relay; others get 403 (DNS rebinding). Repeatable; '*' allows any",
        "NAME",
        is_list=True,
    ),
    Setting(
        "colab",
        _bool,
        False,
        f"let Colab connect to this relay: --allow-origin {COLAB_ORIGIN}, for Colab's direct "
        "calls and its websocket bridge (/http_over_websocket)",
        is_flag=True,
    ),
    Setting(
        "metrics_public",
        _bool,
        False,
        "serve /relay/metrics (Prometheus) without the token, for a scraper that has none; "
        "it shows counts and backend names, never a secret",
        is_flag=True,
    ),
    Setting(
        "primary",
        str,
        None,
        "the backend that holds the files (default: the first that can)",
        "NAME",
    ),
    Setting("ca_cert", str, None, "extra CA file to verify backends' TLS certificates", "FILE"),
    Setting("tls_server_name", str, None, "name to verify in backends' certificates", "NAME"),
    Setting("client_cert", str, None, "client certificate to present to backends", "FILE"),
    Setting("client_key", str, None, "key of the client certificate", "FILE"),
    Setting("connect_timeout", _positive, 10.0, "seconds to wait for a backend connection", "S"),
    Setting(
        "backend_timeout",
        _positive,
        120.0,
        "seconds to wait for a backend's response headers before answering 504",
        "S",
    ),
    Setting(
        "kernel_start_timeout",
        _positive,
        600.0,
        "seconds a kernel start (POST /api/kernels, a session that starts a kernel) may take "
        "on any backend before answering 504; well above Enterprise Gateway's own launch "
        "timeout, so the gateway's answer is the one the client sees",
        "S",
    ),
    Setting(
        "list_timeout",
        _positive,
        5.0,
        "seconds a merged list (kernels, sessions, specs) waits for a slow backend",
        "S",
    ),
    Setting(
        "start_timeout",
        _positive,
        60.0,
        "seconds to wait for a backend the relay starts to answer",
        "S",
    ),
    Setting(
        "shutdown_timeout",
        _positive,
        10.0,
        "seconds in-flight requests get to finish on shutdown",
        "S",
    ),
    Setting(
        "start_server",
        _choice("always", "never"),
        "always",
        "start a hub user's server when it is stopped (at start, or culled later): always|never",
        "WHEN",
    ),
    Setting(
        "state_dir",
        str,
        None,
        "where sessions of gateway kernels are kept across restarts "
        "(default: Jupyter's runtime directory)",
        "DIR",
    ),
    Setting(
        "proxy_allow",
        _proxy_entry,
        ("loopback",),
        "a host the port proxy may reach: a name, a *.domain glob, an address or CIDR "
        "range, or 'loopback' (repeatable; entries given replace the default)",
        "ENTRY",
        is_list=True,
    ),
    Setting(
        "proxy_deny_port",
        _port_range,
        (),
        "a port or range (6000-6010) the port proxy never reaches (repeatable)",
        "PORT",
        is_list=True,
    ),
    Setting("log_level", _log_level, "info", "debug, info, warning or error", "LEVEL"),
)
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}
# TOML spells list settings in the plural, as users expect.
FILE_KEYS = {
    "allow_origins": "allow_origin",
    "allow_hosts": "allow_host",
    "proxy_deny_ports": "proxy_deny_port",
    **{s.key: s.key for s in SETTINGS},
}
EXTRA_ENV = {ENV_PREFIX + "BACKENDS", ENV_PREFIX + "CONFIG"}
