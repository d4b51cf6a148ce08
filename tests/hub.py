"""A real JupyterHub on loopback for the `hub` backend's tests.

`start_hub` runs `python -m jupyterhub -f <generated jupyterhub_config.py>` in a private
directory: its own sqlite database, cookie secret, pid files and log. The public side is
configurable-http-proxy (from npm, `bench/node_modules/.bin`, put on the Hub's PATH) on a
free 127.0.0.1 port, speaking TLS with a certificate that a private trustme CA issued for
the name `jupyterhub` only, not for the address: a client must be told that name (as users
of the seed passed `--tls-server-name jupyterhub`). The Hub's own API and the proxy's API
listen on other free loopback ports, in plain HTTP as in a usual deployment.

Users log in with the DummyAuthenticator (nobody here does: the tests use API tokens).
SimpleLocalProcessSpawner runs `jupyterhub-singleuser` (as root: with `--allow-root`) as
the current user, with HOME and the working directory (its root_dir) at `home/<user>` in
the private directory, so what a server writes is on disk where a test can read it.
Named servers are allowed. Three users' spawns go wrong on purpose (see `SPAWN_HOOK`):
`broken`'s is refused by the spawner (`BROKEN_MESSAGE`), `slowpoke`'s server never answers
and the Hub gives up after `SLOWPOKE_HTTP_TIMEOUT` s, `sluggish`'s never answers for longer
than a relay waits in the tests; `dave`'s server keeps the Hub's word on a token for a
second only (not five minutes); `stubborn`'s takes a few seconds to stop. The Hub answers
a start at once (`slow_spawn_timeout` 0) and reports the spawn only on its progress
stream, as hubs with slow spawners do.

A service `relay-tests` holds an API token with a role that administers users, servers
and tokens; the helpers here use it over the public TLS port, to create users, issue and
revoke their tokens, and start or stop (cull) their servers.

`stop()` ends the Hub as its operator would (SIGTERM: it stops the users' servers and the
proxy it started), then kills whatever of it survived; `restart()` brings it back on the
same ports with the same database, certificate and tokens.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trustme

from .needs import missing
from .servers import BIN, ROOT, _child_env, free_port
from .waiting import eventually_sync

# configurable-http-proxy, installed by `npm ci` in bench (scripts/test does it).
CHP_DIR = ROOT / "bench" / "node_modules" / ".bin"
TLS_NAME = "jupyterhub"  # the only name in the Hub's certificate
SERVICE = "relay-tests"
START_TIMEOUT = 60.0
SPAWN_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
BROKEN = "broken"  # a user whose spawner refuses to start a server
BROKEN_MESSAGE = "no GPU quota left for this user"
SLOWPOKE = "slowpoke"  # a user whose server never answers: the Hub gives up
SLOWPOKE_HTTP_TIMEOUT = 3
SLUGGISH = "sluggish"  # a user whose server never answers for a long time
# A user whose server keeps the Hub's word on a token for a second, not five minutes: a
# revoked token is refused soon.
UNCACHED = "dave"
# A user whose server ignores SIGINT: the Hub takes STUBBORN_STOP s (then SIGTERM) to stop it.
STUBBORN = "stubborn"
STUBBORN_STOP = 4

# A user whose server has jupyter-server-proxy disabled: no port proxy of its own.
NO_PROXY = "noproxy"

# Appended to the generated config: per-user spawns that go wrong or lack something.
SPAWN_HOOK = f"""
import sys as _sys

def _pre_spawn(spawner):
    never_answers = [_sys.executable, "-c", "import time; time.sleep(600)"]
    name = spawner.user.name
    if name == {BROKEN!r}:
        raise RuntimeError({BROKEN_MESSAGE!r})
    if name == {SLOWPOKE!r}:
        spawner.cmd = never_answers
        spawner.http_timeout = {SLOWPOKE_HTTP_TIMEOUT}
    if name == {SLUGGISH!r}:
        spawner.cmd = never_answers
        spawner.http_timeout = 30
    if name == {STUBBORN!r}:
        ignore_sigint = (
            "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        spawner.cmd = [_sys.executable, "-c", ignore_sigint, *spawner.cmd]
        spawner.interrupt_timeout = {STUBBORN_STOP}
    if name == {UNCACHED!r}:
        spawner.args = [*spawner.args, "--HubOAuth.cache_max_age=1"]
    if name == {NO_PROXY!r}:
        spawner.args = [*spawner.args, "--ServerApp.jpserver_extensions=jupyter_server_proxy=False"]

c.Spawner.pre_spawn_hook = _pre_spawn
"""


class HubError(RuntimeError):
    """The Hub's API answered something else than a helper expected."""


@dataclass
class Hub:
    """A running JupyterHub of the tests', and what reaches it."""

    dir: Path
    port: int  # public: configurable-http-proxy, TLS
    hub_port: int  # the Hub's own API, plain HTTP
    proxy_api_port: int
    ca: trustme.CA
    ca_file: Path
    config: Path
    service_token: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    tls_name: str = TLS_NAME
    # When the proxy demands client certificates: the CA it trusts for them, and one it
    # issued (PEM: certificate and key) that the helpers here present.
    client_ca_file: Path | None = None
    client_pem: Path | None = None
    _context: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_pem is not None:
            self._context.load_cert_chain(str(self.client_pem))

    # --- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Hub's public URL by address (the certificate does not name it)."""
        return f"https://127.0.0.1:{self.port}/"

    @property
    def token_page(self) -> str:
        return f"{self.url}hub/token"

    def home(self, user: str) -> Path:
        """The user's home and the servers' root directory."""
        return self.dir / "home" / user

    def backend_arg(
        self,
        name: str,
        user: str | None,
        *,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        tls_server_name: str | None = TLS_NAME,
        **options: str,
    ) -> str:
        """`NAME=hub+https://[USER@]127.0.0.1:PORT/?token_file=..&ca_cert=..&...`."""
        query: dict[str, str] = {}
        if token_file is not None:
            query["token_file"] = str(token_file)
        query["ca_cert"] = str(ca_file or self.ca_file)
        if tls_server_name is not None:
            query["tls_server_name"] = tls_server_name
        query.update(options)
        who = f"{user}@" if user else ""
        return f"{name}=hub+https://{who}127.0.0.1:{self.port}/?{urllib.parse.urlencode(query)}"

    # --- the API, as the service, over the public TLS port ---------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any]:
        """One call to `path` (from the Hub's root, e.g. `hub/api/users`); status, JSON."""
        conn = http.client.HTTPSConnection(
            self.tls_name, self.port, context=self._context, timeout=timeout
        )
        # Connect to the address, verify the certificate for the name.
        conn._create_connection = _to_loopback  # type: ignore[attr-defined]
        headers = {"Authorization": f"token {token or self.service_token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/" + path.lstrip("/"), body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text

    def api(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...]) -> Any:
        status, answer = self.request(method, f"hub/api/{path}", body)
        if status not in expect:
            raise HubError(f"{method} /hub/api/{path}: {status} {answer!r}")
        return answer

    def create_user(self, user: str) -> None:
        """Create `user` if the Hub does not know it yet."""
        self.api("POST", f"users/{user}", expect=(201, 409))

    def user_model(self, user: str) -> dict[str, Any]:
        model: dict[str, Any] = self.api("GET", f"users/{user}", expect=(200,))
        return model

    def issue_token(self, user: str, note: str = "jupyter-relay tests") -> tuple[str, str]:
        """A new API token of `user` with the default scopes; (token, its id)."""
        model = self.api("POST", f"users/{user}/tokens", {"note": note}, expect=(201,))
        return str(model["token"]), str(model["id"])

    def revoke_token(self, user: str, token_id: str) -> None:
        self.api("DELETE", f"users/{user}/tokens/{token_id}", expect=(204,))

    def server(self, user: str, server: str = "") -> dict[str, Any] | None:
        """The Hub's model of the user's (named) server, or None if it has none running."""
        found: dict[str, Any] | None = self.user_model(user).get("servers", {}).get(server)
        return found

    def server_path(self, user: str, server: str = "") -> str:
        return f"/user/{user}/{server + '/' if server else ''}"

    def _server_api(self, user: str, server: str) -> str:
        return f"users/{user}/servers/{server}" if server else f"users/{user}/server"

    def start_server(self, user: str, server: str = "") -> dict[str, Any]:
        """Start the user's (named) server and wait until the Hub says it is ready."""
        self.api("POST", self._server_api(user, server), expect=(201, 202, 400))
        return self.wait_server(user, server, ready=True)

    def stop_server(self, user: str, server: str = "") -> None:
        """Stop the user's (named) server, as a culler does; wait until it is gone."""
        self.api("DELETE", self._server_api(user, server), expect=(202, 204, 400))
        self.wait_server(user, server, ready=False)

    def wait_server(
        self, user: str, server: str = "", *, ready: bool, timeout: float = SPAWN_TIMEOUT
    ) -> dict[str, Any]:
        state = "ready" if ready else "stopped"

        def there() -> tuple[dict[str, Any]] | None:
            model = self.server(user, server)
            if ready and model is not None and model.get("ready"):
                return (model,)
            if not ready and model is None:
                return ({},)
            return None

        try:
            (model,) = eventually_sync(
                there, timeout=timeout, interval=0.1, what=f"{user}'s server {server!r} {state}"
            )
        except AssertionError as exc:
            raise HubError(f"{exc}\nhub log:\n{self.logs()}") from exc
        return model

    # --- the process -----------------------------------------------------------------------

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _launch(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        env = _child_env(
            {
                "PATH": f"{BIN}:{CHP_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
            }
        )
        env.pop("JUPYTERHUB_API_TOKEN", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
            )
        proc = self.proc

        def answers() -> tuple[int, Any] | None:
            if proc.poll() is not None:
                with self.log.open("rb") as log:
                    log.seek(offset)
                    text = log.read().decode(errors="replace")
                raise HubError(f"jupyterhub exited ({proc.returncode}): {text[-3000:]}")
            status, answer = self.request("GET", "hub/api/", timeout=5)
            assert status == 200 and isinstance(answer, dict), (status, answer)
            return (status, answer) if "version" in answer else None

        try:
            eventually_sync(
                answers,
                timeout=START_TIMEOUT,
                interval=0.1,
                what="jupyterhub answers hub/api/ over TLS",
                ignoring=(AssertionError, OSError, http.client.HTTPException),
            )
        except AssertionError as exc:
            self.stop()
            raise HubError(f"{exc}: {self.logs()}") from exc

    def _processes(self) -> list[psutil.Process]:
        """The Hub, its proxy, the users' servers and their kernels: all that has its dir."""
        mine: list[psutil.Process] = []
        home = str(self.dir)
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error):
                if proc.cwd().startswith(home) or proc.environ().get("HOME", "").startswith(
                    home + os.sep
                ):
                    mine.append(proc)
        return mine

    def stop(self) -> None:
        """SIGTERM the Hub (it stops servers and proxy), then kill anything of it left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        victims = self._processes()
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=10)

    def restart(self) -> None:
        """Start the Hub again on the same ports, with the same database and certificate."""
        if self.running():
            raise HubError("jupyterhub is still running")
        self._launch()


def _to_loopback(
    address: tuple[str, int], timeout: float | None = None, source_address: Any = None
) -> socket.socket:
    return socket.create_connection(("127.0.0.1", address[1]), timeout, source_address)


def _config(hub: Hub, certfile: Path, keyfile: Path, spawner_args: list[str]) -> str:
    roles = [
        {
            "name": SERVICE,
            "scopes": ["admin:users", "admin:servers", "tokens"],
            "services": [SERVICE],
        }
    ]
    settings: list[tuple[str, object]] = [
        ("JupyterHub.bind_url", hub.url),
        ("JupyterHub.ssl_cert", str(certfile)),
        ("JupyterHub.ssl_key", str(keyfile)),
        ("JupyterHub.hub_bind_url", f"http://127.0.0.1:{hub.hub_port}"),
        ("JupyterHub.db_url", f"sqlite:///{hub.dir / 'jupyterhub.sqlite'}"),
        ("JupyterHub.cookie_secret_file", str(hub.dir / "jupyterhub_cookie_secret")),
        ("JupyterHub.pid_file", str(hub.dir / "jupyterhub.pid")),
        ("JupyterHub.authenticator_class", "jupyterhub.auth.DummyAuthenticator"),
        ("JupyterHub.spawner_class", "jupyterhub.spawner.SimpleLocalProcessSpawner"),
        ("JupyterHub.allow_named_servers", True),
        ("JupyterHub.services", [{"name": SERVICE, "api_token": hub.service_token}]),
        ("JupyterHub.load_roles", roles),
        ("JupyterHub.cleanup_servers", True),
        ("JupyterHub.cleanup_proxy", True),
        ("JupyterHub.tornado_settings", {"slow_spawn_timeout": 0}),
        ("ConfigurableHTTPProxy.api_url", f"http://127.0.0.1:{hub.proxy_api_port}"),
        ("ConfigurableHTTPProxy.pid_file", str(hub.dir / "proxy.pid")),
        ("ConfigurableHTTPProxy.should_start", True),
        *_client_cert_settings(hub),
        ("Authenticator.allow_all", True),
        ("SimpleLocalProcessSpawner.home_dir_template", str(hub.dir / "home" / "{username}")),
        ("Spawner.cmd", [str(BIN / "jupyterhub-singleuser")]),
        ("Spawner.args", spawner_args),
        ("Spawner.ip", "127.0.0.1"),
        ("Spawner.start_timeout", int(SPAWN_TIMEOUT)),
        ("Spawner.http_timeout", int(SPAWN_TIMEOUT)),
    ]
    lines = ["# Generated by tests/hub.py", "c = get_config()  # noqa"]
    lines += [f"c.{key} = {value!r}" for key, value in settings]
    return "\n".join(lines) + "\n" + SPAWN_HOOK


def _client_cert_settings(hub: Hub) -> list[tuple[str, object]]:
    """configurable-http-proxy told to refuse clients without a certificate of the CA's."""
    if hub.client_ca_file is None:
        return []
    command = [
        str(CHP_DIR / "configurable-http-proxy"),
        "--ssl-ca",
        str(hub.client_ca_file),
        "--ssl-request-cert",
        "--ssl-reject-unauthorized",
    ]
    return [("ConfigurableHTTPProxy.command", command)]


def start_hub(workdir: Path, *, client_certs: bool = False) -> Hub:
    """A real JupyterHub on free loopback ports, TLS for the name `jupyterhub` only.

    With `client_certs`, its proxy accepts only clients with a certificate from a CA of
    its own (`client_ca_file`); `client_pem` is one, which the helpers present.
    """
    if not (CHP_DIR / "configurable-http-proxy").exists():
        missing(f"{CHP_DIR} lacks configurable-http-proxy (npm ci in bench)")
    hub_dir = workdir / f"jupyterhub-{secrets.token_hex(4)}"
    hub_dir.mkdir(mode=0o700, parents=True)
    (hub_dir / "home").mkdir()
    ca = trustme.CA()
    ca_file = hub_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = ca.issue_cert(TLS_NAME)
    certfile, keyfile = hub_dir / "hub.crt", hub_dir / "hub.key"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    spawner_args = ["--allow-root"] if os.geteuid() == 0 else []
    client_ca_file = client_pem = None
    if client_certs:
        client_ca = trustme.CA()
        client_ca_file = hub_dir / "client-ca.pem"
        client_ca.cert_pem.write_to_path(str(client_ca_file))
        client_pem = hub_dir / "client.pem"
        client_ca.issue_cert("relay-tests-client").private_key_and_cert_chain_pem.write_to_path(
            str(client_pem)
        )
    hub: Hub | None = None
    for _ in range(5):  # three ports picked ahead: retry if one was taken meanwhile
        hub = Hub(
            dir=hub_dir,
            port=free_port(),
            hub_port=free_port(),
            proxy_api_port=free_port(),
            ca=ca,
            ca_file=ca_file,
            config=hub_dir / "jupyterhub_config.py",
            service_token=secrets.token_hex(32),
            log=hub_dir / "jupyterhub.log",
            client_ca_file=client_ca_file,
            client_pem=client_pem,
        )
        if len({hub.port, hub.hub_port, hub.proxy_api_port}) < 3:
            continue
        hub.config.write_text(_config(hub, certfile, keyfile, spawner_args))
        try:
            hub._launch()
            break
        except HubError:
            hub.stop()
            if "in use" in hub.logs():
                continue
            raise
    else:
        raise HubError("no free ports for jupyterhub")
    assert hub is not None
    return hub
