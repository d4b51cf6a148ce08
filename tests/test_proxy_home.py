"""Where `/proxy/<port>/` leads for each kind of primary (proxy/home.py, pure)."""

from __future__ import annotations

import pytest

from jupyter_relay.proxy.home import Leads, is_loopback_host, port_home


@pytest.mark.parametrize(
    ("kind", "host", "leads"),
    [
        (None, None, Leads.HERE),  # gateways only
        ("local", "127.0.0.1", Leads.HERE),
        ("jupyter", "127.0.0.1", Leads.HERE),
        ("jupyter", "127.3.4.5", Leads.HERE),
        ("jupyter", "localhost", Leads.HERE),
        ("jupyter", "[::1]", Leads.HERE),
        ("jupyter", "::1", Leads.HERE),
        ("jupyter", "gpu-box.example.org", Leads.BACKEND),
        ("jupyter", "10.0.0.7", Leads.BACKEND),
        ("jupyter", "localhost.example.org", Leads.BACKEND),
        ("hub", "127.0.0.1", Leads.BACKEND),  # user servers answer under /user/<name>/
        ("hub", "hub.example.org", Leads.BACKEND),
        ("ssh", None, Leads.SSH),
    ],
)
def test_the_primary_decides(kind: str | None, host: str | None, leads: Leads) -> None:
    home = port_home(kind, "p" if kind else None, host)
    assert home.leads is leads
    assert (home.backend is None) == (leads is Leads.HERE)
    said = home.describe()
    assert ("this machine" in said) and (leads is Leads.HERE or "/proxy/localhost:<port>/" in said)


def test_what_is_loopback() -> None:
    assert is_loopback_host("app.localhost")
    assert not is_loopback_host(None)
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("127.0.0.1.nip.io")
