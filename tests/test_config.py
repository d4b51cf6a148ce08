"""Configuration: flags over environment over file, and one-line refusals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from jupyter_relay import kept_token
from jupyter_relay.config import RelayConfig, load_config
from jupyter_relay.errors import ConfigError
from jupyter_relay.settings import COLAB_ORIGIN
from jupyter_relay.specs import SshTarget, parse_backend

NO_FILE = {"JUPYTER_CONFIG_DIR": "/nonexistent"}


def load(
    flags: dict[str, Any] | None = None,
    backends: list[str] | None = None,
    env: dict[str, str] | None = None,
    path: str | None = None,
) -> RelayConfig:
    return load_config(flags or {}, backends or [], {**NO_FILE, **(env or {})}, path)


def test_defaults(tmp_path: Path) -> None:
    config = load(env={"JUPYTER_DATA_DIR": str(tmp_path)})
    assert (config.ip, config.port) == ("127.0.0.1", 8765)
    assert [b.kind for b in config.backends] == ["local"]
    assert config.primary == "local"
    assert config.token is not None and config.token_generated
    assert config.token_keep == tmp_path / "jupyter-relay" / "token"
    assert len(config.token.value) >= 32  # >= 128 bits of hex
    assert "Secret(***)" in repr(config)


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text('port = 1111\nip = "127.0.0.2"\nlog_level = "debug"\n')
    config = load(
        {"port": "3333"},
        env={"JUPYTER_RELAY_PORT": "2222", "JUPYTER_RELAY_IP": "127.0.0.3"},
        path=str(file),
    )
    assert config.port == 3333
    assert config.ip == "127.0.0.3"
    assert config.log_level == "debug"


def test_kernel_start_timeout_and_the_env_of_gateway_starts(tmp_path: Path) -> None:
    assert load().kernel_start_timeout == 600.0
    file = tmp_path / "relay.toml"
    file.write_text("kernel_start_timeout = 900\n")
    assert load(path=str(file)).kernel_start_timeout == 900.0
    env = {"JUPYTER_RELAY_KERNEL_START_TIMEOUT": "300"}
    assert load(env=env, path=str(file)).kernel_start_timeout == 300.0
    assert load({"kernel_start_timeout": "30"}, env=env).kernel_start_timeout == 30.0
    with pytest.raises(ConfigError, match="--kernel-start-timeout must be a positive"):
        load({"kernel_start_timeout": "0"})
    config = load(env={"KERNEL_USERNAME": "alice", "KERNEL_TEAM": "ml", "HOME": "/h"})
    assert config.kernel_env == {"KERNEL_USERNAME": "alice", "KERNEL_TEAM": "ml"}
    assert "KERNEL_TEAM" not in repr(config)


def test_default_file_in_jupyter_config_dir(tmp_path: Path) -> None:
    (tmp_path / "jupyter-relay.toml").write_text("port = 4444\n")
    assert load_config({}, [], {"JUPYTER_CONFIG_DIR": str(tmp_path)}).port == 4444


def test_file_backends_and_flag_backend_takes_table_options(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("filetoken\n")
    file = tmp_path / "relay.toml"
    file.write_text(
        f'allow_origins = ["https://a.example.org"]\n'
        f'[backends.lab]\nurl = "http://127.0.0.1:8888/base"\ntoken_file = "{token_file}"\n'
        f'headers = {{ X-Team = "ml" }}\n'
    )
    config = load(path=str(file))
    (lab,) = config.backends
    assert lab.name == "lab" and str(lab.url) == "http://127.0.0.1:8888/base/"
    assert lab.token.read() is not None and lab.token.read().value == "filetoken"  # type: ignore[union-attr]
    assert lab.headers == (("X-Team", "ml"),)
    assert config.allow_origins == ("https://a.example.org",)
    # A flag naming the same backend gets the file's options underneath.
    config = load(backends=["lab=http://127.0.0.1:9999/"], path=str(file))
    assert str(config.backends[0].url) == "http://127.0.0.1:9999/"
    assert config.backends[0].token.file == token_file


def test_env_backends_and_colab() -> None:
    config = load({"colab": True}, env={"JUPYTER_RELAY_BACKENDS": "local lab=http://h:1/"})
    assert [b.name for b in config.backends] == ["local", "lab"]
    assert COLAB_ORIGIN in config.allow_origins


def test_allowed_hosts_from_every_source(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text('allow_hosts = ["Jupyter.Example.org."]\n')
    assert load(path=str(file)).allow_hosts == ("jupyter.example.org",)
    env = {"JUPYTER_RELAY_ALLOW_HOST": "a.example.org, [::2]"}
    assert load(env=env).allow_hosts == ("a.example.org", "::2")
    config = load({"allow_host": ["*", "*"]})
    assert config.allow_hosts == ("*",) and config.loopback
    assert not load({"ip": "0.0.0.0"}).loopback  # then any Host is answered


@pytest.mark.parametrize(
    ("flags", "backends", "env", "message"),
    [
        ({"port": "70000"}, [], {}, "--port must be 0-65535"),
        ({"port": "eighty"}, [], {}, "--port must be a whole number (got 'eighty')"),
        ({}, [], {"JUPYTER_RELAY_PORTT": "1"}, "unknown environment variable JUPYTER_RELAY_PORTT"),
        (
            {"no_auth": True, "ip": "0.0.0.0"},
            [],
            {},
            "refusing to listen on 0.0.0.0 without a token",
        ),
        ({"token": ""}, [], {}, "use --no-auth"),
        ({"allow_origin": ["example.org"]}, [], {}, "is not an origin"),
        ({"allow_host": ["https://x.org"]}, [], {}, "--allow-host: 'https://x.org' is not a host"),
        ({"allow_host": ["a b"]}, [], {}, "is not a host name like jupyter.example.org"),
        ({"primary": "gpu"}, [], {}, "--primary 'gpu' is not a backend; known: local"),
        (
            {"primary": "eg"},
            ["eg=gateway+http://h:1/", "local"],
            {},
            "--primary 'eg' is a gateway backend, which serves kernels only",
        ),
        ({"list_timeout": "0"}, [], {}, "--list-timeout must be a positive"),
        ({}, ["local", "local"], {}, "two backends are named 'local'"),
        ({"backend_timeout": "-1"}, [], {}, "--backend-timeout must be a positive"),
        ({"log_level": "loud"}, [], {}, "--log-level must be one of"),
        ({"ca_cert": "/no/such.pem"}, [], {}, "--ca-cert /no/such.pem does not exist"),
    ],
)
def test_refusals(
    flags: dict[str, Any], backends: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(flags, backends, env)
    assert message in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port = [", "is not valid TOML"),
        ("prot = 1", "unknown key 'prot'"),
        ("[backends.lab]\nurl = 'http://h:1/'\ntokn = 'x'", "unknown backend option 'tokn'"),
        ("backends = 3", "'backends' must hold tables"),
        ('port = "eighty"', "port must be a whole number (got 'eighty')"),
        ("backend_timeout = true", "backend_timeout must not be true or false (got True)"),
        ("port = 99999", "port must be 0-65535"),
    ],
)
def test_file_refusals(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "relay.toml"
    file.write_text(content)
    with pytest.raises(ConfigError) as info:
        load(path=str(file))
    assert message in info.value.message
    assert str(file) in info.value.message


def test_missing_explicit_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(path="/no/such/relay.toml")


def test_token_file(tmp_path: Path) -> None:
    file = tmp_path / "t"
    file.write_text("  from-file \n")
    config = load({"token_file": str(file)})
    assert config.token is not None and config.token.value == "from-file"
    assert not config.token_generated
    file.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load({"token_file": str(file)})


@pytest.mark.parametrize(
    ("arg", "name", "kind", "url"),
    [
        ("local", "local", "local", None),
        ("box=local", "box", "local", None),
        ("http://127.0.0.1:8888", "jupyter", "jupyter", "http://127.0.0.1:8888/"),
        (
            "lab=https://h.example.org/base/?token=abc",
            "lab",
            "jupyter",
            "https://h.example.org/base/",
        ),
        ("lab=http://[::1]:8888/x?token_env=T", "lab", "jupyter", "http://[::1]:8888/x/"),
        (
            "eg=gateway+http://eg.internal:8888/?token=abc",
            "eg",
            "gateway",
            "http://eg.internal:8888/",
        ),
        ("gateway+https://eg:9443/gw", "gateway", "gateway", "https://eg:9443/gw/"),
    ],
)
def test_parse_backend(arg: str, name: str, kind: str, url: str | None) -> None:
    spec = parse_backend(arg)
    assert (spec.name, spec.kind) == (name, kind)
    assert (str(spec.url) if spec.url else None) == url
    assert "abc" not in spec.public_url()


def test_ssh_backend_uri() -> None:
    spec = parse_backend("gpu=ssh://me@gpu-box:2222?jupyter_port=8889&start=true&jupyter=/opt/j")
    assert spec.kind == "ssh" and spec.ssh is not None
    assert (spec.ssh.host, spec.ssh.user, spec.ssh.port) == ("gpu-box", "me", 2222)
    assert (spec.ssh.jupyter_port, spec.ssh.start, spec.ssh.jupyter) == (8889, True, "/opt/j")
    assert spec.public_url() == "ssh://me@gpu-box:2222"
    alias = parse_backend("ssh://gpu-box")
    assert (alias.name, alias.ssh) == ("ssh", SshTarget(host="gpu-box"))
    with pytest.raises(ConfigError, match="ssh:// backends only"):
        parse_backend("lab=http://h:1/", table={"start": "true"})


def test_hub_backend_uri() -> None:
    spec = parse_backend("gpu=hub+https://me@hub.example.org/prefix?server=gpu&tls_server_name=jh")
    assert spec.kind == "hub" and spec.hub is not None
    assert (spec.hub.user, spec.hub.server, spec.hub.start_server) == ("me", "gpu", True)
    assert str(spec.url) == "https://hub.example.org/prefix/"
    assert spec.tls.server_name == "jh"
    assert spec.token.describe() == "environment variable JUPYTERHUB_API_TOKEN"
    assert spec.public_url() == "hub+https://me@hub.example.org/prefix/?server=gpu"
    never = load({"start_server": "never"}, ["hub=hub+https://h/"])
    assert never.backends[0].hub is not None and not never.backends[0].hub.start_server
    for bad, message in (
        ("hub=hub+https://me:pw@h/", "no password in the hub URL"),
        ("hub=hub+https://h/?server=a/b", "is not a server name"),
        ("hub=hub+https://h/?srv=x", "unknown option 'srv' in hub URL"),
        ("lab=http://h:1/?server=x", "unknown option 'server'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_backend(bad)


def test_the_seeds_environment_describes_a_hub_backend() -> None:
    env = {
        "JUPYTER_SERVER_IP_OR_NAME": "1.2.3.4",
        "JUPYTER_USERNAME": "myname",
        "JUPYTER_SERVER_PORT": "8443",
        "JUPYTER_SERVER_NAME": "jh.cluster",
        "JUPYTER_PROXY_PORT": "8001",
    }
    config = load(env=env)
    (spec,) = config.backends
    assert spec.kind == "hub" and spec.public_url() == "hub+https://myname@1.2.3.4:8443/"
    assert spec.tls.server_name == "jh.cluster" and config.port == 8001
    assert load({"port": "9000"}, env=env).port == 9000  # a flag still wins
    assert load(env={"JUPYTER_USERNAME": "x"}).backends[0].kind == "local"  # no host: not used


def test_the_primary_is_the_first_backend_that_holds_files() -> None:
    assert load({}, ["eg=gateway+http://h:1/", "gpu=http://h:2/", "local"]).primary == "gpu"
    assert load({}, ["eg=gateway+http://h:1/"]).primary is None
    spec = parse_backend("eg=gateway+http://h:1/?token=abc")
    assert spec.kernels_only and spec.public_url() == "gateway+http://h:1/"


def test_backend_token_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_backend("lab=http://h:1/?token=abc")
    assert spec.token.read().value == "abc"  # type: ignore[union-attr]
    monkeypatch.setenv("LAB_TOKEN", "from-env")
    spec = parse_backend("lab=http://h:1/?token_env=LAB_TOKEN")
    assert spec.token.read().value == "from-env"  # type: ignore[union-attr]
    assert spec.token.describe() == "environment variable LAB_TOKEN"
    monkeypatch.delenv("LAB_TOKEN")
    with pytest.raises(ConfigError, match="LAB_TOKEN is not set"):
        spec.token.read()


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("ftp://h/", "cannot read backend URI"),
        ("Lab=http://h:1/", "backend name 'Lab' is not allowed"),
        ("lab=http://h:1/?tokn=1", "unknown option 'tokn'"),
        ("lab=http://u:p@h:1/", "not in the URL's user part"),
        ("lab=http://h:1/?token=a&token_env=B", "give only one of"),
        ("lab=http:///nohost", "has no host"),
        ("gpu=ssh://me:pw@gpu-box", "no passwords in ssh:// URLs"),
        ("gpu=ssh://gpu-box/x", "an ssh:// URL has no path"),
        ("gpu=ssh://gpu-box?jupyter_port=0", "jupyter_port=0 is not a port"),
        ("gpu=ssh://gpu-box?start=maybe", "start=maybe must be true or false"),
        ("gpu=ssh://gpu-box?tokn=1", "unknown option 'tokn' in ssh URL"),
        ("lab=http://h:1/?jupyter_port=1", "unknown option 'jupyter_port'"),
        ("lab=http://h:1/?ca_cert=/no/ca.pem", "ca_cert=/no/ca.pem does not exist"),
        ("local?port=3", "takes only root_dir"),
        ("", "empty backend URI"),
    ],
)
def test_parse_backend_refusals(arg: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend(arg)
    assert message in info.value.message


def test_refusal_never_echoes_a_token() -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend("lab=ftp://h/?token=supersecret")
    assert "supersecret" not in info.value.message


def test_the_token_is_kept_between_starts_and_replaced_on_request(tmp_path: Path) -> None:
    env = {"JUPYTER_DATA_DIR": str(tmp_path / "data")}
    first = load(env=env)
    assert first.token is not None and first.token_keep is not None
    kept_token.write(first.token_keep, first.token.value)  # as server.start does
    assert first.token_keep.stat().st_mode & 0o777 == 0o600
    assert first.token_keep.parent.stat().st_mode & 0o777 == 0o700
    again = load(env=env)
    assert again.token == first.token and not again.token_generated
    fresh = load({"new_token": True}, env=env)
    assert fresh.token != first.token and fresh.token_generated
    given = load({"token": "mine"}, env=env)
    assert given.token_keep is None  # a given token is not kept, nor does it replace one


def test_a_kept_token_others_may_read_is_refused(tmp_path: Path) -> None:
    env = {"JUPYTER_DATA_DIR": str(tmp_path)}
    file = kept_token.path(env)
    kept_token.write(file, "secret")
    file.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert f"chmod 600 {file}" in info.value.message and "--new-token" in info.value.message
    assert "secret" not in info.value.message


def test_listening_on_a_unix_socket_or_with_tls(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not parsed here")
    sock = load({"sock": "relay.sock"})
    assert sock.sock == Path.cwd() / "relay.sock" and sock.scheme == "http"
    tls = load({"certfile": str(cert), "keyfile": str(cert)})
    assert (tls.certfile, tls.keyfile, tls.scheme) == (cert, cert, "https")
    assert load().scheme == "http" and load().sock is None


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"sock": "/tmp/r.sock", "port": "9000"}, {}, "give --sock or --port, not both"),
        ({"sock": "/tmp/r.sock"}, {"JUPYTER_RELAY_PORT": "9000"}, "give --sock or --port"),
        ({"sock": "/tmp/r.sock", "certfile": "CERT"}, {}, "give --sock or --certfile"),
        ({"keyfile": "CERT"}, {}, "--keyfile needs --certfile"),
        ({"certfile": "/nonexistent/cert.pem"}, {}, "--certfile /nonexistent/cert.pem does not"),
        ({"sock": " "}, {}, "--sock is empty"),
    ],
)
def test_listening_options_that_do_not_fit(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("")
    flags = {k: str(cert) if v == "CERT" else v for k, v in flags.items()}
    with pytest.raises(ConfigError) as info:
        load(flags, env=env)
    assert message in info.value.message and "\n" not in info.value.message
