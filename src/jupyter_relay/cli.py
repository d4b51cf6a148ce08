"""The `jupyter-relay` command: flags, help, and one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import shtab

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
once running:
  open the printed URL for JupyterLab (/ leads to /lab), or paste it into an IDE;
  /relay/ is the status page (each backend up or down, its kernels and sessions),
  /relay/api/status the same as JSON, /relay/metrics for Prometheus, and
  /relay/healthz whether the primary answers (no token needed)

backend URIs:
  local                                   a Jupyter server the relay starts and stops
  local?root_dir=PATH                     ... serving PATH (default: the current directory)
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
  jupyter-relay --certfile cert.pem --keyfile key.pem       # clients connect with https://
  jupyter-relay --sock ~/.jupyter-relay.sock                # a Unix socket, mode 0600
  jupyter-relay --backend local --backend gpu=http://gpu-box:8888/?token_env=GPU_TOKEN \\
                --backend eg=gateway+http://eg.internal:8888/

several backends:
  The first (or --primary) holds the files; kernels of all are listed together.
  Other backends' kernels are named <backend>--<kernel> ("Python 3 (gpu)").

discovery:
  While it runs, the relay writes jpserver-<pid>.json to Jupyter's runtime
  directory (mode 0600), so 'jupyter server list' and IDEs find it.

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
    "listening": ("ip", "port", "sock", "certfile", "keyfile"),
    "authentication": (
        "token",
        "token_file",
        "new_token",
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
        "kernel_start_timeout",
        "start_timeout",
        "shutdown_timeout",
        "log_level",
    ),
    "port proxy (/proxy/<port>/, /proxy/<host>:<port>/, /apps/<name>/)": (
        "proxy_allow",
        "proxy_deny_port",
    ),
}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line as the relay's others: what, a guess, where to look."""

    def error(self, message: str) -> NoReturn:
        guess = did_you_mean(message, list(self._option_string_actions))
        self.exit(2, f"{self.prog}: error: {message}{guess}; see {self.prog} --help\n")


# Flags an earlier version had, and what to do instead.
REMOVED = {
    "--no-fast-path": "the relay has one engine now; leave the flag out",
}


def did_you_mean(message: str, options: list[str]) -> str:
    """' (did you mean --backend?)' for the first unknown flag in argparse's message."""
    if "unrecognized arguments:" not in message:
        return ""
    for word in message.partition("unrecognized arguments:")[2].split():
        if word.partition("=")[0] in REMOVED:
            return f" ({word.partition('=')[0]} was removed: {REMOVED[word.partition('=')[0]]})"
        if word.startswith("-"):
            close = difflib.get_close_matches(word.partition("=")[0], options, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="jupyter-relay",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"jupyter-relay {__version__}")
    # Completion for bash, zsh and tcsh, made from these flags (shtab): e.g. in ~/.bashrc,
    # eval "$(jupyter-relay --print-completion bash)".
    shtab.add_argument_to(parser, ["--print-completion"], help="print a shell completion script")
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
    args.pop("print_completion", None)  # shtab's: it printed and exited when given
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
