"""The `jupyter-relay` command: flags, help, and one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .config import default_config_path, load_config
from .errors import ConfigError, RelayError
from .logs import setup_logging
from .server import serve
from .settings import ENV_PREFIX, SETTINGS

DESCRIPTION = """\
One local Jupyter endpoint in front of any number of Jupyter backends.

With no arguments, starts a Jupyter server of its own (the 'local' backend)
and prints the URL to open in a browser or paste into VS Code / PyCharm."""

EPILOG = f"""\
backend URIs:
  local                                   a Jupyter server the relay starts and stops
  http(s)://host:port/base/?token=T       a Jupyter server already running
  gateway+http(s)://host:port/?token=T    a Kernel Gateway or Enterprise Gateway (kernels only)
  hub+https://[user@]hub.example.org/     your server on a JupyterHub (?server=NAME; the token
                                          from $JUPYTERHUB_API_TOKEN or token_file=)
  ssh://[user@]host[:port]                the Jupyter running on a machine you reach with ssh
                                          (?jupyter_port=N, ?start=true, ?jupyter=PATH,
                                          ?ssh_config=FILE; keys, agent, known_hosts as ssh)
  options in the URI's query: token_file=PATH, token_env=VAR (keep tokens out of ps),
  ca_cert=PATH, tls_server_name=NAME, client_cert=PATH, client_key=PATH

examples:
  jupyter-relay
  jupyter-relay --backend lab=http://127.0.0.1:8888/?token_env=LAB_TOKEN
  jupyter-relay --backend lab=https://jh.example.org:8443/ --ca-cert ca.pem --port 0
  jupyter-relay --backend local --backend gpu=http://gpu-box:8888/?token_env=GPU_TOKEN \\
                --backend eg=gateway+http://eg.internal:8888/

several backends:
  The first (or --primary) holds the files; kernels of all are listed together.
  Other backends' kernels are named <backend>--<kernel> ("Python 3 (gpu)").

configuration:
  Every option can also come from a TOML file (--config, or
  {default_config_path(os.environ)}) and from {ENV_PREFIX}<OPTION> variables
  (e.g. {ENV_PREFIX}PORT=9000, {ENV_PREFIX}BACKENDS="local lab=http://..."). Flags
  override variables, which override the file. Backends in the file:
      [backends.lab]
      url = "http://127.0.0.1:8888/"
      token_file = "~/.lab-token"
"""

GROUPS = {
    "listening": ("ip", "port"),
    "authentication": (
        "token",
        "token_file",
        "no_auth",
        "allow_origin",
        "allow_host",
        "colab",
        "metrics_public",
    ),
    "backends": ("primary", "start_server", "state_dir"),
    "TLS to backends (defaults for every backend)": (
        "ca_cert",
        "tls_server_name",
        "client_cert",
        "client_key",
    ),
    "timeouts and logging": (
        "connect_timeout",
        "backend_timeout",
        "list_timeout",
        "start_timeout",
        "shutdown_timeout",
        "log_level",
    ),
    "port proxy (/proxy/<port>/, /proxy/<host>:<port>/, /apps/<name>/)": (
        "proxy_allow",
        "proxy_deny_port",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-relay",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"jupyter-relay {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    by_key = {s.key: s for s in SETTINGS}
    grouped = {key for keys in GROUPS.values() for key in keys}
    assert grouped == set(by_key), f"settings without a --help group: {set(by_key) - grouped}"
    for title, keys in GROUPS.items():
        group = parser.add_argument_group(title)
        if title == "backends":
            group.add_argument(
                "--backend",
                action="append",
                metavar="[NAME=]URI",
                help="a backend to serve (repeatable); default: one 'local' backend",
            )
        for key in keys:
            setting = by_key[key]
            shown = (
                " ".join(setting.default) if isinstance(setting.default, tuple) else setting.default
            )
            default = "" if setting.default in (None, (), False) else f" (default: {shown})"
            help_text = setting.help + default
            if setting.is_flag:
                group.add_argument(
                    setting.flag, dest=key, action="store_const", const=True, help=help_text
                )
            elif setting.is_list:
                group.add_argument(
                    setting.flag, dest=key, action="append", metavar=setting.metavar, help=help_text
                )
            else:
                group.add_argument(setting.flag, dest=key, metavar=setting.metavar, help=help_text)
    return parser


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): a faster event loop, same behaviour."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    backends = args.pop("backend", [])
    config_path = args.pop("config", None)
    try:
        config = load_config(args, backends, os.environ, config_path)
    except RelayError as exc:
        print(f"jupyter-relay: error: {exc.message}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(serve(config))
    except ConfigError as exc:  # found at start, e.g. the port is taken
        print(f"jupyter-relay: error: {exc.message}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"jupyter-relay: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
