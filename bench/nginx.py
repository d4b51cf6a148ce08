"""nginx configurations: the HTTP backend, and nginx as a peer proxy.

Both run as children of the benchmark, each with its own prefix directory,
`daemon off` and `master_process on` so that the benchmark owns the master and
the master owns its worker. Each has ONE worker process: the relay and
configurable-http-proxy are single-process too, and on a 2-core machine that
also runs the load generator and the backend a second worker would only
compete for the same cores. One worker is nginx compared per core, which is
what the other proxies get.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# About 100 bytes of JSON, the size of a small Jupyter API answer.
SMALL_JSON = (
    '{"name": "relay-bench", "kind": "small", "ok": true, '
    '"items": [1, 2, 3, 4, 5], "pad": "xxxxxxxxxxxxxxx"}'
)
SMALL_PATH = "small.json"
BIG_PATH = "big.bin"


def _main_context(workdir: Path) -> str:
    # Running as root (scripts/bench installs with apt), the worker would switch to
    # `nobody`, which may not read the files the benchmark made: keep root.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
{temp}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_max_body_size 0;
"""


def backend_config(workdir: Path, port: int, www: Path) -> str:
    """The HTTP backend: the small JSON from memory, static files from `www`."""
    return (
        _main_context(workdir)
        + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /{SMALL_PATH} {{
            default_type application/json;
            return 200 '{SMALL_JSON}';
        }}
        location = /api/status {{
            default_type application/json;
            return 200 '{{"backend": "nginx"}}';
        }}
        location / {{
            root {www};
        }}
    }}
}}
"""
    )


def proxy_config(workdir: Path, routes: Mapping[int, int]) -> str:
    """nginx as a reverse proxy: each listening port to one backend port.

    The upstream keeps idle connections (`keepalive`, HTTP/1.1, an empty
    Connection header), websockets are upgraded, request bodies stream
    (`proxy_request_buffering off`) and responses are buffered in memory only
    (`proxy_max_temp_file_size 0`): no temporary files, like the other proxies.
    """
    upstreams = "".join(
        f"""
    upstream backend_{backend} {{
        server 127.0.0.1:{backend};
        keepalive 64;
    }}"""
        for backend in routes.values()
    )
    servers = "".join(
        f"""
    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        location / {{
            proxy_pass http://backend_{backend};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}"""
        for listen, backend in routes.items()
    )
    return (
        _main_context(workdir)
        + """
    map $http_upgrade $connection_upgrade {
        default upgrade;
        '' '';
    }"""
        + upstreams
        + servers
        + "\n}\n"
    )
