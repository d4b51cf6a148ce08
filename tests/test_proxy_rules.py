"""The port proxy's pure rules: URL forms, the allowlist, port ranges, app tables."""

from __future__ import annotations

import ipaddress

import pytest

from jupyter_relay.errors import ConfigError
from jupyter_relay.headers import response_headers, upstream_target
from jupyter_relay.proxy.allow import Allowlist, parse_port_ranges, port_denied
from jupyter_relay.proxy.appspec import parse_apps
from jupyter_relay.proxy.paths import context_headers, parse_app, parse_proxy


@pytest.mark.parametrize(
    ("path", "host", "port", "absolute", "prefix"),
    [
        ("/proxy/8050/", None, 8050, False, "/proxy/8050"),
        ("/proxy/8050", None, 8050, False, "/proxy/8050"),
        ("/proxy/8050/a/b?c", None, 8050, False, "/proxy/8050"),
        ("/proxy/absolute/8050/x", None, 8050, True, "/proxy/absolute/8050"),
        ("/proxy/localhost:1/", "localhost", 1, False, "/proxy/localhost:1"),
        (
            "/proxy/absolute/gpu-box.lan:65535",
            "gpu-box.lan",
            65535,
            True,
            "/proxy/absolute/gpu-box.lan:65535",
        ),
        ("/proxy/[::1]:8050/", "[::1]", 8050, False, "/proxy/[::1]:8050"),
        ("/proxy/10.0.0.1:80/%2F%23x", "10.0.0.1", 80, False, "/proxy/10.0.0.1:80"),
        ("/proxy/absolute:80/", "absolute", 80, False, "/proxy/absolute:80"),
    ],
)
def test_the_four_forms(
    path: str, host: str | None, port: int, absolute: bool, prefix: str
) -> None:
    parsed = parse_proxy(path.partition("?")[0])
    assert parsed is not None
    assert (parsed.host, parsed.port, parsed.absolute, parsed.prefix) == (
        host,
        port,
        absolute,
        prefix,
    )


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/",
        "/proxy/0/",
        "/proxy/65536/",
        "/proxy/08050/",
        "/proxy/8050x/",
        "/proxy/8050@evil.example:80/",  # GHSA-gcv9-6737-pjqw: the path must start with /
        "/proxy/8050.evil.example/",
        "/proxy/localhost%2F@evil:80/",
        "/proxy/user@localhost:80/",
        "/proxy/http://evil:80/",
        "/proxy/evil%2Eexample:80/",
        "/proxy/127.1:80/",  # numeric forms libc reads as 127.0.0.1
        "/proxy/2130706433:80/",
        "/proxy/0x7f.1:80/",
        "/proxy/::1:80/",  # IPv6 only in brackets
        "/proxy/[::1%25eth0]:80/",
        "/proxy/[evil]:80/",
        "/proxy/-x:80/",
        "/proxy/a..b:80/",
        "/proxy/under_score:80/",  # `_` only in backend names
        "/proxy/<script>:80/",
        "/proxy/absolute/",
        "/proxy/absolute/x/",
    ],
)
def test_anything_else_is_not_a_proxy_path(path: str) -> None:
    assert parse_proxy(path) is None


def test_a_backend_name_may_hold_an_underscore() -> None:
    parsed = parse_proxy("/proxy/my_gpu:6006/", frozenset({"my_gpu"}))
    assert parsed is not None and parsed.host == "my_gpu"


def test_app_paths() -> None:
    assert parse_app("/apps/tb") is not None and parse_app("/apps/tb").bare  # type: ignore[union-attr]
    app = parse_app("/apps/tb/x/y")
    assert app is not None and (app.name, app.prefix, app.bare) == ("tb", "/apps/tb", False)
    for bad in ("/apps/", "/apps/TB/", "/apps/1x/", "/apps/x%2F/"):
        assert parse_app(bad) is None


def test_relative_mode_strips_the_prefix_and_says_so() -> None:
    assert upstream_target("/proxy/8050/a/b", "/", "/proxy/8050") == "/a/b"
    assert upstream_target("/proxy/8050", "/", "/proxy/8050") == "/"
    assert upstream_target("/proxy/absolute/8050/a", "/", "") == "/proxy/absolute/8050/a"
    assert dict(context_headers("/proxy/8050")) == {
        "X-Forwarded-Prefix": "/proxy/8050",
        "X-Forwarded-Context": "/proxy/8050",
        "X-Proxycontextpath": "/proxy/8050",
    }


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/target", "/proxy/8050/target"),
        ("/target?x=1#f", "/proxy/8050/target?x=1#f"),
        ("http://localhost:8050/t", "/proxy/8050/t"),
        ("relative", "relative"),
        ("https://elsewhere.example/t", "https://elsewhere.example/t"),
        ("//elsewhere.example/t", "//elsewhere.example/t"),
        # Already under the prefix (the app read X-Forwarded-Prefix): not prefixed twice.
        ("/proxy/8050/t", "/proxy/8050/t"),
        ("/proxy/8050", "/proxy/8050"),
        ("/proxy/8050?x=1", "/proxy/8050?x=1"),
        ("http://localhost:8050/proxy/8050/t", "/proxy/8050/t"),
        ("/proxy/80501/t", "/proxy/8050/proxy/80501/t"),
    ],
)
def test_redirects_of_a_relative_app_stay_under_its_prefix(location: str, expected: str) -> None:
    out = response_headers(
        [("Location", location)],
        backend_origins=frozenset({"http://localhost:8050"}),
        relay_is_https=False,
        location_prefix="/proxy/8050",
    )
    assert out["Location"] == expected


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_the_default_allowlist_is_loopback() -> None:
    allow = Allowlist.parse(["loopback"])
    assert allow.name_listed("localhost") and allow.name_listed("LOCALHOST.")
    assert allow.in_ranges(ip("127.0.0.1")) and allow.in_ranges(ip("127.9.9.9"))
    assert allow.in_ranges(ip("::1")) and allow.in_ranges(ip("::ffff:127.0.0.1"))
    assert not allow.in_ranges(ip("10.0.0.1"))
    assert not allow.name_listed("example.org")


def test_names_globs_and_ranges() -> None:
    allow = Allowlist.parse(["gpu-box.lan", "*.example.org", "10.0.0.0/8", "[fd00::1]"])
    assert allow.name_listed("gpu-box.lan")
    assert allow.name_listed("a.example.org") and allow.name_listed("a.b.example.org")
    assert not allow.name_listed("example.org") and not allow.name_listed("badexample.org")
    assert allow.in_ranges(ip("10.1.2.3")) and allow.in_ranges(ip("fd00::1"))
    assert not allow.in_ranges(ip("11.0.0.1"))


GUARDED = (
    "169.254.169.254",  # AWS, GCP, Azure metadata
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata
    "100.64.0.1",  # shared address space (carrier-grade NAT, Tailscale)
    "169.254.1.1",
    "fe80::1",
    "::ffff:169.254.169.254",
)


def test_metadata_and_guarded_blocks_need_their_own_entry() -> None:
    wide = Allowlist.parse(["0.0.0.0/0", "::/0", "100.0.0.0/8", "fd00::/8", "*.example.org"])
    for address in GUARDED:
        assert not wide.in_ranges(ip(address)), address
        assert not wide.address_allowed(ip(address), name_listed=True), address
    assert wide.in_ranges(ip("10.1.2.3")) and wide.in_ranges(ip("fd00::1"))
    # An entry inside the block allows the block, but not the metadata address in it.
    block = Allowlist.parse(["169.254.0.0/16", "100.64.0.0/10", "fe80::/10"])
    assert block.in_ranges(ip("169.254.1.1")) and block.in_ranges(ip("100.64.0.1"))
    assert block.in_ranges(ip("fe80::1"))
    assert not block.in_ranges(ip("169.254.169.254"))
    assert not block.in_ranges(ip("100.100.100.200"))
    # A metadata address is allowed by itself.
    meta = Allowlist.parse(["169.254.169.254", "[fd00:ec2::254]"])
    assert meta.in_ranges(ip("169.254.169.254")) and meta.in_ranges(ip("fd00:ec2::254"))
    assert meta.in_ranges(ip("::ffff:169.254.169.254"))
    assert not meta.in_ranges(ip("169.254.169.253"))


def test_a_listed_name_may_not_stand_for_a_special_address() -> None:
    """DNS rebinding: a listed name that resolves to loopback or metadata is refused."""
    allow = Allowlist.parse(["*.example.org"])
    for special in ("127.0.0.1", "::1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1"):
        assert not allow.address_allowed(ip(special), name_listed=True), special
    assert allow.address_allowed(ip("93.184.216.34"), name_listed=True)
    assert allow.address_allowed(ip("192.168.1.20"), name_listed=True)
    assert not allow.address_allowed(ip("93.184.216.34"), name_listed=False)
    with_loopback = Allowlist.parse(["*.example.org", "loopback"])
    assert with_loopback.address_allowed(ip("127.0.0.1"), name_listed=True)


@pytest.mark.parametrize("bad", ["*", "*.", "a*.example.org", "http://x", "x@y", "10.0.0.0/33"])
def test_bad_entries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        Allowlist.parse([bad])


def test_port_ranges() -> None:
    denied = parse_port_ranges(["22", "6000-6010"])
    assert port_denied(22, denied) and port_denied(6005, denied)
    assert not port_denied(6011, denied) and not port_denied(21, denied)
    for bad in ("0", "70000", "10-5", "x"):
        with pytest.raises(ValueError):
            parse_port_ranges([bad])


def test_app_tables() -> None:
    (app,) = parse_apps(
        {
            "tb": {
                "command": "tensorboard --port {port} --path_prefix {base_url}",
                "environment": {"X": "{port}"},
                "timeout": 5,
                "absolute_url": True,
            }
        },
        "relay.toml",
    )
    assert app.command[-1] == "{base_url}" and app.render(app.command[-1], 1) == "/apps/tb/"
    assert app.render(app.command[2], 4321) == "4321" and app.absolute_url
    assert app.timeout == 5.0 and app.environment == (("X", "{port}"),)


def test_two_apps_on_one_fixed_port_are_refused() -> None:
    tables = {
        "a": {"command": ["x"], "port": 8050},
        "b": {"command": ["x"]},
        "c": {"command": ["x"], "port": 8050},
    }
    with pytest.raises(ConfigError, match=r"\[apps\.a\] and \[apps\.c\] both have port = 8050"):
        parse_apps(tables, "relay.toml")
    # Free ports (0) may repeat: each start picks its own.
    assert len(parse_apps({"a": {"command": ["x"]}, "b": {"command": ["x"]}}, "r.toml")) == 2


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({}, "'command' must be"),
        ({"command": []}, "'command' is empty"),
        ({"command": ["x", "{nope}"]}, "not a template"),
        ({"command": ["x"], "timeout": 0}, "'timeout'"),
        ({"command": ["x"], "absolute_url": "yes"}, "'absolute_url'"),
        ({"command": ["x"], "port": 70000}, "'port'"),
        ({"command": ["x"], "cmd": 1}, "unknown key 'cmd'"),
    ],
)
def test_bad_app_tables_are_refused(table: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_apps({"tb": table}, "relay.toml")
    with pytest.raises(ConfigError, match="app name"):
        parse_apps({"Bad Name": {"command": ["x"]}}, "relay.toml")
