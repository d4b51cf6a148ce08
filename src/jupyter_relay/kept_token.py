"""The relay's token, kept between starts so a server saved in an IDE keeps working.

With no --token or --token-file, the relay reuses the token kept in
`<Jupyter data dir>/jupyter-relay/token` (`~/.local/share/jupyter/...`, or
`$JUPYTER_DATA_DIR`), or makes one and keeps it there: the directory mode 0700,
the file 0600, written whole or not at all. `--new-token` makes a new one and
keeps that. The data directory, not the runtime one: the runtime directory may
be a tmpfs (`$XDG_RUNTIME_DIR`) emptied at every login, and a token that lasts
is the point.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from .errors import ConfigError

FILE = Path("jupyter-relay") / "token"


def path(env: Mapping[str, str]) -> Path:
    """Where the token is kept, for the environment `env`."""
    data = env.get("JUPYTER_DATA_DIR") or jupyter_data_dir()
    return Path(data).expanduser() / FILE


def new() -> str:
    return secrets.token_hex(24)


def read(file: Path) -> str | None:
    """The kept token, or None when there is none yet; a file others may read is refused."""
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the kept token {file}: {exc.strerror or exc}; fix it, "
            "or start with --new-token to replace it"
        ) from exc
    if mode & 0o077:
        raise ConfigError(
            f"the kept token {file} may be read by other users (mode {mode & 0o777:o}); "
            f"run 'chmod 600 {file}', or start with --new-token to replace it"
        )
    return text or None


def write(file: Path, token: str) -> None:
    """Keep `token` in `file` (mode 0600, its directory 0700), replacing what was there."""
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=file.parent, prefix=".token-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        os.chmod(temp, 0o600)
        os.replace(temp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
