"""Which ciphers the `ssh` backend offers: AES-GCM first, unless the ssh config says otherwise."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from jupyter_relay.backends.ssh_config import FAST_CIPHERS, client_config, encryption_algs
from jupyter_relay.errors import ConfigError
from jupyter_relay.specs import SshTarget, parse_backend

DEFAULTS = [c.decode() for c in asyncssh.encryption.get_default_encryption_algs()]


def config_of(tmp_path: Path, text: str) -> object:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return client_config(SshTarget(host="gpu-box", ssh_config=path))


def test_aes_gcm_comes_first_and_nothing_is_lost(tmp_path: Path) -> None:
    offered = encryption_algs(config_of(tmp_path, "Host gpu-box\n    Port 2222\n"), DEFAULTS)
    assert offered is not None
    assert offered[: len(FAST_CIPHERS)] == list(FAST_CIPHERS)
    assert sorted(offered) == sorted(DEFAULTS)


def test_the_ciphers_of_the_ssh_config_win(tmp_path: Path) -> None:
    config = config_of(tmp_path, "Host gpu-box\n    Ciphers chacha20-poly1305@openssh.com\n")
    assert encryption_algs(config, DEFAULTS) is None  # asyncssh applies the config's own


def test_without_a_readable_config_the_defaults_are_reordered() -> None:
    assert encryption_algs(None, ["aes128-ctr", "aes256-gcm@openssh.com"]) == [
        "aes256-gcm@openssh.com",
        "aes128-ctr",
    ]


def test_helper_is_on_unless_turned_off_and_a_bad_value_is_named() -> None:
    assert parse_backend("g=ssh://gpu-box").ssh == SshTarget(host="gpu-box")
    off = parse_backend("g=ssh://gpu-box?helper=false").ssh
    assert off is not None and not off.helper
    with pytest.raises(ConfigError, match=r"helper=maybe must be true or false"):
        parse_backend("g=ssh://gpu-box?helper=maybe")
