"""The peers tier: the peers' own test suites, alone and through the relay (scripts/peers).

Each test runs one peer's suite in every pass (about 11 minutes for jupyter_server,
2 for jupyter-server-proxy) and fails if a test that passes against the peer alone
fails through the relay, twice. `pytest -m "not peers"` leaves them out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.peers, pytest.mark.timeout(3600)]


def check(peer: str) -> None:
    env = {**os.environ, "PEERS_REF_PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "peers"), "--check", peer],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout)  # the comparison: shown with -rA, and with a failure
    assert done.returncode == 0, f"scripts/peers --check {peer}:\n{done.stdout}\n{done.stderr}"


def test_jupyter_servers_rest_api_tests_pass_through_the_relay() -> None:
    check("server")


def test_jupyter_server_proxys_tests_pass_through_the_relay() -> None:
    check("proxy")
