"""Secrets and where they come from.

A token on a command line leaks into `ps`, so every credential can also come
from a file or an environment variable. `Secret` never shows its value in a
repr or a log line; `CredentialSource` reads the value when asked, so a token
file that is renewed is picked up without a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr is safe to log."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class CredentialSource:
    """Where a credential comes from: a literal value, a file or an env variable."""

    literal: Secret | None = None
    file: Path | None = None
    env: str | None = None

    def describe(self) -> str:
        """Say where the value comes from, without the value."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        if self.literal is not None:
            return "the command line or config file"
        return "nowhere (no token)"

    def read(self) -> Secret | None:
        """Return the current value, reading the file or variable now."""
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read token file {self.file}: {exc.strerror or exc}"
                ) from exc
            if not text:
                raise ConfigError(f"token file {self.file} is empty")
            return Secret(text)
        if self.env is not None:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise ConfigError(f"environment variable {self.env} is not set or empty")
            return Secret(value)
        return self.literal

    @property
    def configured(self) -> bool:
        return self.literal is not None or self.file is not None or self.env is not None
