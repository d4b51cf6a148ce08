"""The answers behind the failures: the same requests to a Jupyter server and to a relay before it.

    python probe.py [relay flags]

Starts `jupyter server` (base URL /a%40b/) and `python -m jupyter_relay` in front of
it, sends each request to both (the relay first: what it creates, the server then
has), and prints status, Location and body side by side.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from relay_command import relay_command  # type: ignore[import-not-found]  # tests/peers on the path

BASE = "/a%40b/"
REQUESTS = [
    # (method, path, body): what the failing tests send
    ("DELETE", "api/kernels/111-111-111-111-111", None),
    ("GET", "api/kernels/111-111-111-111-111", None),
    (
        "POST",
        "api/sessions",
        {"notebook": {"path": "nb1.ipynb"}, "kernel": {"name": "python", "id": "foo"}},
    ),
    (
        "POST",
        "api/sessions",
        {
            "path": "nb2.ipynb",
            "type": "notebook",
            "kernel": {"name": "python3", "id": "12345678-1234-5678-1234-567812345678"},
        },
    ),
    ("POST", "api/kernels", {"name": "python3"}),
    ("GET", "api/kernels", None),
]


def send(url: str, token: str, method: str, body: object) -> tuple[int, str, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Location") or "", resp.read().decode()[:300]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location") or "", exc.read().decode()[:300]


def wait_for(url: str, token: str) -> None:
    for _ in range(100):
        try:
            send(url, token, "GET", None)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} never answered")


def main() -> int:
    extra = sys.argv[1:]
    root = tempfile.mkdtemp()
    token, relay_token = secrets.token_hex(8), secrets.token_hex(8)
    port = 20000 + secrets.randbelow(20000)
    env = dict(os.environ, JUPYTER_TOKEN=token)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.base_url={BASE}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    relay = subprocess.Popen(
        relay_command(relay_token, f"http://127.0.0.1:{port}{BASE}?token={token}", root, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        direct = f"http://127.0.0.1:{port}{BASE}"
        wait_for(direct + "api/status", token)
        assert relay.stdout is not None
        match = re.search(r"http://[^/\s]+:(\d+)/", relay.stdout.readline())
        assert match, "the relay printed no URL"
        via = f"http://127.0.0.1:{match.group(1)}/"
        for method, path, body in REQUESTS:
            print(f"{method} /{path} {json.dumps(body) if body else ''}")
            for name, base, tok in (("relay ", via, relay_token), ("server", direct, token)):
                status, location, text = send(base + path, tok, method, body)
                print(f"  {name}: {status} {('Location: ' + location) if location else ''}")
                print(f"          {text}")
    finally:
        for proc in (relay, server):
            proc.terminate()
            proc.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
