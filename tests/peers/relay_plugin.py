"""A pytest plugin: jupyter_server's own REST API tests, sent through a jupyter-relay.

Loaded with `-p relay_plugin` (this directory on PYTHONPATH) by `scripts/peers`.
It does nothing unless asked, through the environment:

  PEERS_RELAY=1            jp_fetch and jp_ws_fetch go through a relay started as a
                           subprocess in front of the test's own server
  PEERS_RELAY_ARGS="..."   extra relay flags (e.g. --log-level debug)
  PEERS_BASE_URL=/         the test server's base URL (pytest-jupyter's default: /a%40b/)

The client speaks to the relay at its root: `http://127.0.0.1:<relay port>/<path>`,
with the relay's token; the relay maps /api/... onto the backend's base URL itself.
Paths are escaped exactly as pytest-jupyter's jp_fetch escapes them.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered now, after the conftest's `pytest_plugins` (pytest-jupyter), so that
    # these fixtures override pytest-jupyter's of the same names.
    if os.environ.get("PEERS_RELAY") == "1" or os.environ.get("PEERS_BASE_URL"):
        config.pluginmanager.import_plugin("relay_fixtures")
