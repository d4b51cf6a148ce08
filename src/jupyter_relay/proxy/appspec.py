"""Named apps in the config file: `[apps.<name>]` tables read into frozen `AppSpec`s.

    [apps.tensorboard]
    command = ["tensorboard", "--logdir", "runs", "--port", "{port}"]
    environment = { TB_PREFIX = "{base_url}" }
    timeout = 30          # seconds for the app to listen on its port
    absolute_url = false  # true: the app sees the full /apps/<name>/... path
    port = 0              # 0 (default): a free port, chosen at each start

`{port}` is the port the app must listen on (127.0.0.1); `{base_url}` is
the path it is served under, `/apps/<name>/`. Pure: no I/O.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .paths import APP_NAME

KEYS = ("command", "environment", "timeout", "absolute_url", "port")
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class AppSpec:
    name: str
    command: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    absolute_url: bool = False
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"/apps/{self.name}/"

    def render(self, text: str, port: int) -> str:
        return text.format(port=port, base_url=self.base_url)


def parse_apps(tables: Mapping[str, Any], where: str) -> tuple[AppSpec, ...]:
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{where}: 'apps' must hold tables like [apps.NAME]")
    specs = tuple(
        _parse_app(name, table, f"{where}: [apps.{name}]") for name, table in tables.items()
    )
    owners: dict[int, str] = {}
    for spec in specs:
        if not spec.port:
            continue
        if spec.port in owners:
            raise ConfigError(
                f"{where}: [apps.{owners[spec.port]}] and [apps.{spec.name}] both have "
                f"port = {spec.port}; two apps cannot listen on one port: give one another "
                "port, or port = 0 for a free one at each start"
            )
        owners[spec.port] = spec.name
    return specs


def _parse_app(name: str, table: Any, where: str) -> AppSpec:
    if not APP_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: an app name is lower-case letters, digits, '-' and '_', "
            "starting with a letter (it is a URL path segment)"
        )
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    raw = table.get("command")
    if isinstance(raw, str):
        command = shlex.split(raw)
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        command = list(raw)
    else:
        raise ConfigError(f"{where}: 'command' must be a list of strings (or one string)")
    if not command:
        raise ConfigError(f"{where}: 'command' is empty")
    environment = table.get("environment", {})
    if not isinstance(environment, Mapping) or not all(
        isinstance(v, (str, int, float)) for v in environment.values()
    ):
        raise ConfigError(f"{where}: 'environment' must be a table of strings")
    timeout = table.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"{where}: 'timeout' must be a positive number of seconds")
    absolute = table.get("absolute_url", False)
    if not isinstance(absolute, bool):
        raise ConfigError(f"{where}: 'absolute_url' must be true or false")
    port = table.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{where}: 'port' must be 1-65535, or 0 for a free one")
    spec = AppSpec(
        name=name,
        command=tuple(command),
        environment=tuple((str(k), str(v)) for k, v in environment.items()),
        timeout=float(timeout),
        absolute_url=absolute,
        port=port,
    )
    for text in (*spec.command, *(v for _, v in spec.environment)):
        try:
            spec.render(text, 1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{where}: {text!r} is not a template this relay fills: use {{port}} and "
                f"{{base_url}} (write {{{{ and }}}} for literal braces) ({exc!r})"
            ) from None
    return spec
