"""A pytest plugin: jupyter-server-proxy's own tests (`tests/test_proxies.py`), through a relay.

Loaded by `scripts/peers proxy-relay` as `--noconftest -p proxy_plugin`, with the sdist's
`tests/` and this directory on PYTHONPATH: the sdist's conftest is imported here, as
written, and only `a_server_port_and_token` is replaced. Each test's requests then go
to a relay (a subprocess, its own token) in front of the test's Jupyter server, which
runs jupyter-server-proxy:

- `/proxy/<port>/`, `/proxy/absolute/<port>/`, `/proxy/<host>:<port>/` are answered by
  the relay's own port proxy (the URL forms the relay claims);
- every other path (jupyter-server-proxy's named server processes, `/api/status`) is
  passed through the relay to that server.

Where the relay differs on purpose, the test file was adapted by `proxy_differences`
(the one place), before this runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxy_differences import NOT_APPLICABLE  # type: ignore[import-not-found]
from relay_fixtures import RelayProcess  # type: ignore[import-not-found]

# The sdist's own fixtures (a_server, a_token, an_unused_port, a_server_cmd), unchanged.
from conftest import *  # type: ignore[import-not-found]  # noqa: F403

START_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def peers_proxy_relay(
    a_server: str, a_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    """One relay (the peers tier's RelayProcess) in front of the sdist's server."""
    relay = RelayProcess(f"{a_server}?token={a_token}", tmp_path_factory.mktemp("relay-state"))
    try:
        relay.ready_now(START_TIMEOUT)  # the printed URL, once the backend answers
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def a_server_port_and_token(peers_proxy_relay: RelayProcess) -> tuple[int, str]:
    """The sdist's fixture names its server's port and token; here, the relay's."""
    return peers_proxy_relay.ready_now(), peers_proxy_relay.token


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests named (with why) in proxy_differences.NOT_APPLICABLE."""
    left_out = [i for i in items if getattr(i, "originalname", i.name) in NOT_APPLICABLE]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [i for i in items if i not in left_out]
