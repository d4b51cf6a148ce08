"""The server-info file's content: jupyter_server's shape (the file itself: test_listening)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jupyter_server.serverapp import ServerApp

from jupyter_relay.discovery import info_path, server_info

INFO = server_info(
    url="http://127.0.0.1:8765/",
    ip="127.0.0.1",
    port=8765,
    sock="",
    secure=False,
    token="t0k",
    root_dir="/work",
    pid=4242,
    version="0.1.0",
)


def test_the_fields_are_jupyter_servers_own() -> None:
    # The keys jupyter_server's ServerApp.server_info writes, read from its source.
    theirs = set(re.findall(r'"(\w+)":', inspect.getsource(ServerApp.server_info)))
    assert (
        set(INFO)
        == theirs
        == {
            "base_url",
            "hostname",
            "password",
            "pid",
            "port",
            "root_dir",
            "secure",
            "sock",
            "token",
            "url",
            "version",
        }
    )


def test_values() -> None:
    assert INFO["url"] == "http://127.0.0.1:8765/" and "t0k" not in INFO["url"]
    assert (INFO["base_url"], INFO["password"], INFO["hostname"]) == ("/", False, "127.0.0.1")
    assert (INFO["token"], INFO["pid"], INFO["port"], INFO["sock"]) == ("t0k", 4242, 8765, "")


def test_a_wildcard_address_is_listed_as_localhost() -> None:
    unix = server_info(
        url="http+unix://%2Frun%2Fr.sock/",
        ip="",
        port=0,
        sock="/run/r.sock",
        secure=False,
        token="",
        root_dir="/",
        pid=1,
        version="0.1.0",
    )
    assert (unix["hostname"], unix["sock"], unix["token"]) == ("localhost", "/run/r.sock", "")


def test_the_file_is_named_for_the_pid(tmp_path: Path) -> None:
    assert info_path(tmp_path, 4242) == tmp_path / "jpserver-4242.json"
