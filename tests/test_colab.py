"""The Colab bridge (issue 7): one Colab-like client against the reference and the relay.

The same client (tests/colab_client.py: Origin https://colab.research.google.com,
`min_version=0.0.1a3`, requests as JSON messages, answers reassembled by `message_id` and
checked as they arrive) runs against

- `reference`: Google's `jupyter_http_over_ws` 0.0.8 on Notebook 6 in a venv of its own
  (tests/colab_reference.py); the client holds the cookies Notebook sets for the URL with
  the token, as the browser does once the user opened it, and sends them on every
  handshake;
- `relay-local`: `jupyter-relay --colab` with its default `local` backend;
- `relay-jupyter`: the relay with a remote Jupyter (a `jupyter` backend URL) as primary;
- `relay-ssh`: the relay with an `ssh://` backend (tests/sshd.py) as primary;

with the relay's token only inside `jupyter_http_over_ws_auth_url` (the URL the user pasted),
on every websocket URL, as Colab's page connects. For the same requests the same
message shapes are asserted (keys of the first message, of the later ones, of errors),
except where the reference is broken:

Where the reference is broken (each confirmed by a test here), and what the relay does:

- `min_version` too high or unparseable: the reference closes with code 400, which is no
  valid close code, so the client sees a protocol error (1002) and never the reason; the
  relay closes with 4000 and the reason text.
- a non-UTF-8 `body_base64`: the reference raises UnicodeDecodeError, sends no answer and
  the socket dies (1006); the relay passes the body byte for byte (checked at an echo
  backend) and answers once.
- a POST/PUT path with a `?query`: the reference appends `?_xsrf=...` after it
  (`?from=colab?_xsrf=...`) and Notebook answers 403 "'_xsrf' argument missing"; the relay
  201.
- the requests of one socket: the reference handles them one at a time (a fast request
  waits for a slow one); the relay concurrently (the fast one finishes first; 100 slow
  requests take a fraction of the sequential time).
- a kernel's channels offering the v1 subprotocol: Notebook 6 has none (legacy JSON
  frames); through the relay the backend chooses v1 and the binary frames stay binary.
- a message over the size limit: tornado's 10 MiB limit closes the reference's socket
  (1009); the relay answers 400 with the message's `message_id` and a statusText, and the
  socket stays usable.
- `jupyter_http_over_ws_auth_url`: with tornado >= 6.5 (what pip installs today) the
  reference builds a Cookie header with a leading space, which tornado refuses: no answer,
  the socket closes. So the client sends Notebook's cookies on the handshake instead (as a
  browser that opened the URL does). The relay never fetches the URL: it takes the token
  from it when it names the relay's own origin.
- GET /files/ under cookie authentication: Notebook 6 refuses it without a same-origin
  Referer (403 "Blocking request with no referer"), and the reference forwards the
  handshake's headers only; the client's handshakes to the reference carry one. The relay
  needs none.

Where both are right but word things differently, the common part is asserted: the
missing-fields error ("...the following keys: {...}. Got: ..." in the reference, "...the
following fields: ..." in the relay) and `has_authentication_cookie` (the reference means
Notebook's `_xsrf` cookie, the relay its own cookie).

On the relay alone: bad Origin (403, no upgrade), no token (403), a wrong token (403), in
the query or in the auth URL, the token as query, header or cookie, an auth URL on another
origin, host name or scheme (its token does not count; the URL is never fetched; with the
token given otherwise the socket closes with 4000), `proxied_ws` forwarding neither the
token nor the auth URL and keeping a refusal's 404, binary frames read as JSON, inner paths
that would split the request line (400) or hold non-ASCII (percent-encoded), no guessed
Content-Type, request bodies in flight bounded at 64 MiB a socket, the backend stopped
(504) and killed (502) under a live request and mid-body, a body that stalls (504), 100
concurrent slow requests (bounded at 32 in flight, still far faster than sequential), an
oversized message, and `proxied_ws` keeping frame types and close codes both ways; inner
requests reach the backend with the path as sent, no `_xsrf` added, the backend's
credentials and never the relay's token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from jupyter_relay import colab
from jupyter_relay.server import RunningRelay

from .colab_client import (
    COLAB_ORIGIN,
    ERROR_KEYS,
    EXTENSION_VERSION,
    FIRST_KEYS,
    LATER_KEYS,
    MAX_CHUNK,
    Target,
)
from .colab_reference import ReferenceServer, start_reference
from .conftest import RELAY_TOKEN, start_relay
from .echo_app import BACKEND_TOKEN, Echo, run_echo
from .kernel_client import V1
from .servers import JupyterServer, start_jupyter, unread_requests
from .sshd import Sshd, running_sshd, start_remote_jupyter
from .waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

KINDS = ["reference", "relay-local", "relay-jupyter", "relay-ssh"]
BIG = "big.bin"
BIG_SIZE = 5 * 1024 * 1024 + 1234  # not a multiple of the chunk: the last one is short
# The message shapes of the reference, which the relay must share.
SMALL = (frozenset(FIRST_KEYS),)
EMPTY = (frozenset(FIRST_KEYS - {"data"}),)
STREAMED = (frozenset(FIRST_KEYS), frozenset(LATER_KEYS))
TAGGED_ERROR = (frozenset(ERROR_KEYS),)
UNTAGGED_ERROR = frozenset(ERROR_KEYS - {"message_id"})
TOO_HIGH = "Requested version (0.0.9) > Current version (0.0.7). Please upgrade this package."
UNPARSEABLE = 'Invalid "min_version" provided: not-a-version'
MISSING = "Invalid request. The body must contain the following "
# A request the relay cannot forward must be answered within this.
FAIL_BOUND = 20.0


# --- fixtures -----------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where a kind of server listens, and the directory its /files/ and contents serve."""

    kind: str
    base: str
    root: Path
    reference: ReferenceServer | None = None


@pytest.fixture(scope="module")
def colab_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("colab")


@pytest.fixture(scope="module")
def big_payload() -> bytes:
    return os.urandom(BIG_SIZE)


def make_root(work: Path, name: str, payload: bytes) -> Path:
    root = work / f"root-{name}"
    root.mkdir()
    (root / BIG).write_bytes(payload)
    return root


@pytest.fixture(scope="module")
def reference(colab_work: Path, big_payload: bytes) -> Iterator[ReferenceServer]:
    server = start_reference(make_root(colab_work, "reference", big_payload), colab_work)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def remote_jupyter(colab_work: Path, big_payload: bytes) -> Iterator[JupyterServer]:
    """A Jupyter of this module's own, reached by the relay as a `jupyter` backend URL."""
    server = start_jupyter(make_root(colab_work, "jupyter", big_payload), colab_work)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def colab_sshd(colab_work: Path) -> Iterator[Sshd]:
    with running_sshd(colab_work) as server:
        yield server


@pytest.fixture(scope="module")
def ssh_jupyter(colab_sshd: Sshd, colab_work: Path, big_payload: bytes) -> Iterator[JupyterServer]:
    server = start_remote_jupyter(colab_sshd, make_root(colab_work, "ssh", big_payload))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local_root(colab_work: Path, big_payload: bytes) -> Path:
    return make_root(colab_work, "local", big_payload)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay_local(local_root: Path) -> AsyncIterator[RunningRelay]:
    running = await start_relay([f"local?root_dir={local_root}"], colab=True)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay_jupyter(remote_jupyter: JupyterServer) -> AsyncIterator[RunningRelay]:
    running = await start_relay([f"lab={remote_jupyter.backend_arg}"], allow_origin=[COLAB_ORIGIN])
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay_ssh(colab_sshd: Sshd, ssh_jupyter: JupyterServer) -> AsyncIterator[RunningRelay]:
    running = await start_relay([colab_sshd.backend_arg()], colab=True)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def echo_relay() -> AsyncIterator[tuple[Echo, RunningRelay]]:
    """The relay in front of a server that reports what reached it, and has a slow page."""
    async with run_echo() as echo:
        running = await start_relay([echo.backend_arg], colab=True)
        yield echo, running
        await running.stop()


@pytest.fixture(params=KINDS)
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """Each kind of server in turn (only the ones a test asks for are started)."""
    kind: str = request.param
    if kind == "reference":
        ref: ReferenceServer = request.getfixturevalue("reference")
        return Endpoint(kind, ref.base, ref.root, ref)
    if kind == "relay-local":
        relay: RunningRelay = request.getfixturevalue("relay_local")
        return Endpoint(kind, relay.base_url, request.getfixturevalue("local_root"))
    if kind == "relay-jupyter":
        relay = request.getfixturevalue("relay_jupyter")
        jupyter: JupyterServer = request.getfixturevalue("remote_jupyter")
        return Endpoint(kind, relay.base_url, jupyter.root)
    relay = request.getfixturevalue("relay_ssh")
    jupyter = request.getfixturevalue("ssh_jupyter")
    return Endpoint(kind, relay.base_url, jupyter.root)


@contextlib.asynccontextmanager
async def colab_page(endpoint: Endpoint) -> AsyncIterator[Target]:
    """The client as Colab's page is once connected to `endpoint`."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        ref = endpoint.reference
        if ref is None:
            # As Colab's page connects: the URL the user pasted, token and all, rides in
            # `jupyter_http_over_ws_auth_url` on every websocket; no cookie, no header.
            pasted = {colab.AUTH_URL_PARAM: f"{endpoint.base}?token={RELAY_TOKEN}"}
            yield Target(endpoint.kind, endpoint.base, session, query=pasted)
            return
        # The user opened the URL with the token: the browser holds Notebook's cookies.
        async with session.get(ref.auth_url) as resp:
            assert resp.status == 200, await resp.text()
        assert {c.key for c in session.cookie_jar} >= {"_xsrf"}, list(session.cookie_jar)
        yield Target(endpoint.kind, endpoint.base, session, headers={"Referer": ref.base + "tree"})


@pytest_asyncio.fixture(loop_scope="module")
async def target(endpoint: Endpoint) -> AsyncIterator[Target]:
    async with colab_page(endpoint) as page:
        yield page


@pytest_asyncio.fixture(loop_scope="module")
async def relay_target(
    relay_jupyter: RunningRelay, remote_jupyter: JupyterServer
) -> AsyncIterator[Target]:
    """Only the relay (with the `jupyter` backend), for its own failure paths."""
    where = Endpoint("relay-jupyter", relay_jupyter.base_url, remote_jupyter.root)
    async with colab_page(where) as page:
        yield page


def is_reference(target: Target) -> bool:
    return target.name == "reference"


def unique(name: str) -> str:
    return f"colab-{uuid.uuid4().hex[:8]}-{name}"


# --- the Colab flow -----------------------------------------------------------------------


async def test_kernelspecs_session_and_code(target: Target) -> None:
    """List kernelspecs, create a session, run print(6*7) through proxied_ws, end it."""
    async with target.bridge() as sock:
        specs = await sock.request("GET", "/api/kernelspecs")
        assert specs.status == 200, specs.describe()
        assert specs.status_text == "OK"
        assert specs.shape == SMALL
        assert (specs.header("Content-Type") or "").startswith("application/json"), specs.headers
        assert "python3" in specs.json()["kernelspecs"], specs.json()

        notebook = unique("notebook.ipynb")
        model = {"path": notebook, "name": notebook, "type": "notebook"}
        created = await sock.request(
            "POST", "/api/sessions", json_body={**model, "kernel": {"name": "python3"}}
        )
        assert created.status == 201, created.describe()
        assert created.status_text == "Created"
        assert created.shape == SMALL
        session = created.json()
        kernel_id = session["kernel"]["id"]
        try:
            # As Colab's page: no subprotocol offered, legacy JSON frames.
            out, protocol = await target.run_code(kernel_id, "x = 6*7; print(x)")
            assert (out, protocol) == ("42", None)
            # Offering v1: the relay's backends choose it; Notebook 6 knows no subprotocol.
            out, protocol = await target.run_code(kernel_id, "print(x)", protocols=(V1,))
            assert out == "42"
            assert protocol == (None if is_reference(target) else V1)
        finally:
            ended = await sock.request("DELETE", f"/api/sessions/{session['id']}")
        # An empty body: one message, without `data`.
        assert ended.status == 204, ended.describe()
        assert ended.shape == EMPTY and ended.body == b""
        listed = await sock.request("GET", "/api/sessions")
        assert session["id"] not in {s["id"] for s in listed.json()}


async def test_download_5mb_in_chunks(target: Target, big_payload: bytes) -> None:
    async with target.bridge() as sock:
        started = time.monotonic()
        reply = await sock.request("GET", f"/files/{BIG}")
        seconds = time.monotonic() - started
    assert reply.status == 200, reply.describe()
    assert reply.shape == STREAMED
    # check_reply saw each chunk <= 64 KiB raw and one done:true, the last message.
    assert all(len(chunk) <= MAX_CHUNK for chunk in reply.chunks)
    assert len(reply.chunks) >= BIG_SIZE // MAX_CHUNK + 1, len(reply.chunks)
    assert [m["done"] for m in reply.messages].count(True) == 1
    assert len(reply.body) == BIG_SIZE
    assert reply.body == big_payload
    print(f"\n{target.name}: 5 MiB in {len(reply.messages)} messages, {seconds:.2f} s")


async def test_upload_via_body_base64(target: Target, endpoint: Endpoint) -> None:
    """PUT /api/contents/<name>: body_base64 is the base64 of the JSON body (content base64)."""
    payload = bytes(range(256)) * 64 + os.urandom(4096)
    name = unique("upload.bin")
    model = {"type": "file", "format": "base64", "content": base64.b64encode(payload).decode()}
    async with target.bridge() as sock:
        reply = await sock.request(
            "PUT", f"/api/contents/{name}", body_base64=json.dumps(model).encode()
        )
        assert reply.status == 201, reply.describe()
        assert reply.shape == SMALL
        assert reply.json()["size"] == len(payload)
        assert (endpoint.root / name).read_bytes() == payload
        # The same upload as a plain `body`.
        name2 = unique("upload-body.bin")
        reply = await sock.request("PUT", f"/api/contents/{name2}", json_body=model)
        assert reply.status == 201, reply.describe()
        assert (endpoint.root / name2).read_bytes() == payload


async def test_non_utf8_body_base64(target: Target) -> None:
    """A binary body: the reference dies on it (bug); the relay forwards it and answers once."""
    async with target.bridge() as sock:
        message_id = await sock.submit(
            "PUT", f"/api/contents/{unique('raw.bin')}", body_base64=b"\xff\xfe\x00\x80binary"
        )
        if is_reference(target):
            await sock.wait_closed(FAIL_BOUND)
            assert sock.replies[message_id] == []
            assert sock.close_code == 1006, (sock.close_code, sock.close_reason)
            return
        reply = await sock.reply(message_id, FAIL_BOUND)
        # Jupyter's contents API wants UTF-8 JSON: its error (a 500, as it happens) is
        # relayed as an ordinary answer, with headers.
        assert reply.status in (400, 500), reply.describe()
        assert reply.shape == SMALL, reply.messages
        again = await sock.request("GET", "/api/kernelspecs")
        assert again.status == 200


async def test_binary_body_passes_byte_for_byte(echo_relay: tuple[Echo, RunningRelay]) -> None:
    _, relay = echo_relay
    body = os.urandom(1024 * 1024) + b"\xff\xfe\x80"
    page = colab_page(Endpoint("relay-echo", relay.base_url, Path()))
    async with page as target, target.bridge() as sock:
        reply = await sock.request("PUT", "/echo/upload", body_base64=body)
    assert reply.status == 200, reply.describe()
    seen = reply.json()
    assert seen["method"] == "PUT"
    assert (seen["size"], seen["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


async def test_relay_inner_request_is_the_relays_own(
    echo_relay: tuple[Echo, RunningRelay],
) -> None:
    """What reaches the backend: the path and query as sent, no `_xsrf` added, the backend's
    credentials and never the relay's token."""
    _, relay = echo_relay
    path = "/echo/inner?a=1&b=%2F"
    page = colab_page(Endpoint("relay-echo", relay.base_url, Path()))
    async with page as target:
        target.headers["Cookie"] = "_xsrf=from-the-browser"
        async with target.bridge() as sock:
            reply = await sock.request("POST", path, body="{}")
    assert reply.status == 200, reply.describe()
    seen = reply.json()
    assert seen["raw_path"] == path
    headers = dict(seen["headers"])
    assert headers.get("Authorization") == f"token {BACKEND_TOKEN}", headers
    assert RELAY_TOKEN not in json.dumps(seen)


async def test_post_path_with_query(target: Target, endpoint: Endpoint) -> None:
    """The reference breaks paths with a query on POST/PUT (`?a=1?_xsrf=`); the relay not."""
    name = unique("query.txt")
    model = {"type": "file", "format": "text", "content": "with a query\n"}
    async with target.bridge() as sock:
        reply = await sock.request("PUT", f"/api/contents/{name}?from=colab", json_body=model)
    if is_reference(target):
        assert reply.status == 403, reply.describe()
        assert "_xsrf" in reply.json()["message"]
        assert not (endpoint.root / name).exists()
    else:
        assert reply.status == 201, reply.describe()
        assert (endpoint.root / name).read_text() == "with a query\n"


async def test_diagnose(target: Target) -> None:
    answers = await target.diagnose("probe-1", "probe-2")
    for text, answer in zip(("probe-1", "probe-2"), answers, strict=True):
        assert answer.keys() == {
            "message_id",
            "extension_version",
            "has_authentication_cookie",
            "is_outdated_extension",
        }, answer
        assert answer["message_id"] == text
        assert answer["extension_version"] == EXTENSION_VERSION
        assert isinstance(answer["has_authentication_cookie"], bool)
        assert answer["is_outdated_extension"] is False
    # Colab asks with the version it needs; the reference says a server older than that
    # is outdated (so the page can tell the user to upgrade rather than fail to connect).
    [answer] = await target.diagnose("probe-3", min_version="0.0.9")
    assert answer["is_outdated_extension"] is True, (
        f"diagnose?min_version=0.0.9 answered {answer}; the reference says "
        "is_outdated_extension: true, as /http_over_websocket refuses that version"
    )


async def test_requests_on_one_socket_run_concurrently(target: Target) -> None:
    """A slow request (starting a kernel) and a fast one sent after it on one socket."""
    async with target.bridge() as sock:
        slow = await sock.submit("POST", "/api/kernels", body=json.dumps({"name": "python3"}))
        fast = await sock.submit("GET", "/api/kernelspecs")
        fast_reply = await sock.reply(fast)
        slow_reply = await sock.reply(slow)
        assert slow_reply.status == 201, slow_reply.describe()
        assert fast_reply.status == 200, fast_reply.describe()
        kernel_id = slow_reply.json()["id"]
        deleted = await sock.request("DELETE", f"/api/kernels/{kernel_id}")
        assert deleted.status == 204, deleted.describe()
        # The reference handles one message at a time (bug); the relay does not wait.
        expected = [slow, fast] if is_reference(target) else [fast, slow]
        assert sock.finished[:2] == expected


async def test_hundred_requests_on_one_socket(target: Target) -> None:
    async with target.bridge() as sock:
        ids = [await sock.submit("GET", "/api/kernelspecs") for _ in range(100)]
        replies = [await sock.reply(message_id) for message_id in ids]
        assert sorted(sock.finished) == sorted(ids)
    # Each answered exactly once (nothing after done, nothing unknown: assert_clean).
    assert {r.status for r in replies} == {200}
    assert {r.shape for r in replies} == {SMALL}
    assert len({r.body for r in replies}) == 1


async def test_bad_json_and_missing_fields(target: Target) -> None:
    async with target.bridge() as sock:
        await sock.send("{this is not json")
        answer = await sock.next_untagged()
        assert answer == {"status": 400, "statusText": "JSON input is required.", "done": True}

        # Missing fields: the answer has the message_id when the request had one.
        await sock.send({"message_id": "only-an-id"})
        reply = await sock.reply("only-an-id")
        assert reply.shape == TAGGED_ERROR and reply.status == 400
        assert reply.status_text.startswith(MISSING), reply.status_text
        for name in ("message_id", "method", "path"):
            assert name in reply.status_text, reply.status_text

        await sock.send({"method": "GET", "path": "/api/kernelspecs"})
        answer = await sock.next_untagged()
        assert frozenset(answer) == UNTAGGED_ERROR and answer["status"] == 400, answer
        assert answer["statusText"].startswith(MISSING), answer

        # The socket is still usable, and the method is taken in any case.
        reply = await sock.request("get", "/api/kernelspecs")
        assert reply.status == 200 and reply.shape == SMALL


@pytest.mark.parametrize(
    ("min_version", "reason"), [("0.0.9", TOO_HIGH), ("not-a-version", UNPARSEABLE)]
)
async def test_min_version_refused(target: Target, min_version: str, reason: str) -> None:
    async with target.bridge(min_version=min_version) as sock:
        await sock.wait_closed()
    if is_reference(target):
        # Closed with code 400, which is no valid close code: the client sees a protocol error.
        assert sock.close_code == 1002, (sock.close_code, sock.close_reason)
        assert "Invalid close code: 400" in (sock.close_reason or "")
    else:
        assert (sock.close_code, sock.close_reason) == (4000, reason)


@pytest.mark.parametrize("min_version", [None, "0.0.7", "0.0.1a3", "0.0.6"])
async def test_min_version_accepted(target: Target, min_version: str | None) -> None:
    async with target.bridge(min_version=min_version) as sock:
        assert (await sock.request("GET", "/api/kernelspecs")).status == 200


async def test_bad_origin_refused(target: Target) -> None:
    for origin in ("https://evil.example", "https://colab.research.google.com.evil.example"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await target.ws_connect("http_over_websocket", origin=origin)
        assert refused.value.status == 403


async def test_oversized_message(target: Target) -> None:
    """The reference's tornado closes the socket (10 MiB limit); the relay answers 400."""
    big = {
        "message_id": "big",
        "method": "PUT",
        "path": "/api/contents/x",
        "body": "x" * (colab.MESSAGE_LIMIT + (1 << 20)),
    }
    async with target.bridge() as sock:
        if is_reference(target):
            with contextlib.suppress(ConnectionError):  # it may close while we still send
                await sock.send(big)
            await sock.wait_closed(FAIL_BOUND)
            assert sock.close_code == 1009, (sock.close_code, sock.close_reason)
            return
        await sock.send(big)
        answer = (await sock.reply("big", FAIL_BOUND)).final
        assert answer["status"] == 400 and answer["done"] is True, answer
        assert "large" in answer["statusText"].lower(), answer
        reply = await sock.request("GET", "/api/kernelspecs")
        assert reply.status == 200, reply.describe()


# --- the relay's own failure paths --------------------------------------------------------


ENDPOINTS = ("http_over_websocket", "http_over_websocket/diagnose")


async def test_relay_refuses_handshakes_without_its_token(relay_target: Target) -> None:
    kernel_channels = "http_over_websocket/proxied_ws/api/kernels/x/channels"
    base = relay_target.base
    bare = Target("no-token", base, relay_target.session)
    for endpoint in (*ENDPOINTS, kernel_channels):
        refusals: tuple[tuple[dict[str, str], int], ...] = (
            ({}, 403),
            ({"token": "wrong"}, 403),
            ({colab.AUTH_URL_PARAM: f"{base}?token=wrong"}, 403),
            ({colab.AUTH_URL_PARAM: base}, 403),
        )
        for query, status in refusals:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await bare.ws_connect(endpoint, query=query)
            assert refused.value.status == status, (endpoint, query)
        # The right token with a foreign Origin: refused too, before any upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await relay_target.ws_connect(endpoint, origin="https://evil.example")
        assert refused.value.status == 403, endpoint
    # The token in the query, as the relay's other clients send it, is good too.
    async with Target(
        "query", base, relay_target.session, query={"token": RELAY_TOKEN}
    ).bridge() as sock:
        assert (await sock.request("GET", "/api/kernelspecs")).status == 200


async def test_relay_takes_its_token_from_header_or_cookie(relay_target: Target) -> None:
    relay = relay_target.base
    header = {"Authorization": f"token {RELAY_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=header) as session,
        Target("header", relay, session).bridge() as sock,
    ):
        assert (await sock.request("GET", "/api/kernelspecs")).status == 200
    # A browser that opened the relay's URL with the token holds its cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        browser = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
        async with session.get(f"{relay}?token={RELAY_TOKEN}", headers=browser) as resp:
            assert resp.status < 400, resp.status
        assert len(session.cookie_jar) > 0
        async with Target("cookie", relay, session).bridge() as sock:
            assert (await sock.request("GET", "/api/kernelspecs")).status == 200
        [answer] = await Target("cookie", relay, session).diagnose("cookie?")
        assert answer["has_authentication_cookie"] is True


async def test_relay_auth_url_only_from_its_own_origin(
    relay_target: Target, echo_relay: tuple[Echo, RunningRelay]
) -> None:
    """The token counts in `jupyter_http_over_ws_auth_url` only on the relay's own origin,
    and the relay fetches no such URL, its own or another."""
    echo, _ = echo_relay
    base = relay_target.base
    port = URL(base).port
    bare = Target("bare", base, relay_target.session)
    foreign = f"http://127.0.0.1:{echo.port}/echo/auth-url?token={RELAY_TOKEN}"
    other_names = (
        foreign,
        f"http://localhost:{port}/?token={RELAY_TOKEN}",  # the same relay, another name
        f"https://127.0.0.1:{port}/?token={RELAY_TOKEN}",  # another scheme
        f"/?token={RELAY_TOKEN}",  # not absolute
    )
    for auth_url in other_names:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await bare.ws_connect("http_over_websocket", query={colab.AUTH_URL_PARAM: auth_url})
        assert refused.value.status == 403, auth_url
    # With the token given otherwise, a foreign auth URL still closes the socket, unfetched.
    query = {"token": RELAY_TOKEN}
    async with Target("query", base, relay_target.session, query=query).bridge(
        jupyter_http_over_ws_auth_url=foreign
    ) as sock:
        await sock.wait_closed()
    assert sock.close_code == 4000, (sock.close_code, sock.close_reason)
    assert sock.close_reason == f"{colab.AUTH_URL_PARAM} must be on this relay's own origin"
    assert not [r for r in echo.requests if "auth-url" in str(r["raw_path"])], echo.requests


async def test_relay_binary_frames_are_requests_too(
    echo_relay: tuple[Echo, RunningRelay],
) -> None:
    """The reference json.loads whatever frame comes; so does the relay, and a binary frame
    that is no UTF-8 JSON gets the protocol's 400, not silence."""
    _, relay = echo_relay
    where = Endpoint("relay-echo", relay.base_url, Path())
    async with colab_page(where) as page, page.bridge() as sock:
        request = {"message_id": "bin", "method": "GET", "path": "/echo/binary"}
        await sock.send(request, binary=True)
        assert (await sock.reply("bin")).status == 200
        await sock.ws.send_bytes(b"\xff\xfe not json")
        answer = await sock.next_untagged()
        assert answer == {"status": 400, "statusText": "JSON input is required.", "done": True}


async def test_relay_inner_paths_are_checked(echo_relay: tuple[Echo, RunningRelay]) -> None:
    """A path that would split the request line is refused; non-ASCII is percent-encoded."""
    echo, relay = echo_relay
    where = Endpoint("relay-echo", relay.base_url, Path())
    async with colab_page(where) as page, page.bridge() as sock:
        for path in ("/echo/x HTTP/1.1\r\nX-Evil: 1", "/echo/a b", "/echo/\x00"):
            reply = await sock.request("GET", path)
            assert reply.status == 400, reply.describe()
            assert "percent-encode" in reply.status_text, reply.describe()
        reply = await sock.request("GET", "/echo/caf\u00e9?q=\u00fc")
        assert reply.status == 200, reply.describe()
        assert reply.json()["raw_path"] == "/echo/caf%C3%A9?q=%C3%BC"
        # The protocol carries no headers: the body goes without a guessed Content-Type.
        reply = await sock.request("POST", "/echo/typed", body_base64=b"\x00\x01")
        headers = dict(reply.json()["headers"])
        assert "Content-Type" not in headers, headers
    assert not [r for r in echo.requests if "X-Evil" in json.dumps(r)]


async def test_relay_bodies_in_flight_are_bounded(echo_relay: tuple[Echo, RunningRelay]) -> None:
    """Four 20 MiB uploads to a backend that holds each for 4 s: three fit the socket's
    64 MiB budget, the fourth is not even read until one of them has finished.

    The hold is long against the time 60 MiB take to cross a loaded 2-core machine, so
    "together" (under 3/4 of it) and "after" (at least 95% of it) stay apart."""
    echo, relay = echo_relay
    body = os.urandom(20 << 20)
    where = Endpoint("relay-echo", relay.base_url, Path())
    hold = 4.0
    async with colab_page(where) as page, page.bridge() as sock:
        before = len(echo.requests)
        ids = [
            await sock.submit("PUT", f"/slow?s={hold:g}&n={n}", body_base64=body) for n in range(4)
        ]
        replies = [await sock.reply(message_id, 60) for message_id in ids]
    assert [r.status for r in replies] == [200] * 4, [r.describe() for r in replies]
    arrived = sorted(
        float(cast(float, r["arrived"])) for r in echo.requests[before:] if "arrived" in r
    )
    assert len(arrived) == 4, echo.requests[before:]
    assert arrived[2] - arrived[0] < 0.75 * hold, arrived  # the first three together
    assert arrived[3] - arrived[0] >= 0.95 * hold, arrived  # the fourth after one of them ended


async def test_relay_backend_stalls_mid_body() -> None:
    """A body that stops coming (the connection stays open): the request ends with 504
    after the backend timeout, its first part delivered, the socket still usable."""
    stall = asyncio.Event()  # never set while the request runs
    async with cutting_server(stall) as port:
        running = await start_relay(
            [f"stall=http://127.0.0.1:{port}/"], colab=True, backend_timeout="0.5"
        )
        try:
            where = Endpoint("relay-stall", running.base_url, Path())
            async with colab_page(where) as page, page.bridge() as sock:
                message_id = await sock.submit("GET", "/cut")
                reply = await sock.reply(message_id, FAIL_BOUND)
                assert (await sock.request("GET", "/other")).status == 200
        finally:
            await running.stop()
    assert reply.status == 200 and 0 < len(reply.body) <= 256 << 10
    final = reply.final
    assert final["done"] is True and final.get("status") == 504, final
    assert final["statusText"] == "The body stalled: no more of it within 5.5 s", final


async def test_relay_proxied_ws_forwards_neither_token_nor_auth_url(
    echo_relay: tuple[Echo, RunningRelay],
) -> None:
    """The backend's websocket sees its own query only: the relay's token stays behind."""
    echo, relay = echo_relay
    async with colab_page(Endpoint("relay-echo", relay.base_url, Path())) as page:
        query = {"session_id": "s1", "token": RELAY_TOKEN}
        async with page.proxied("ws", query=query) as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=10)).data == "ping"
    [seen] = [r for r in echo.requests if str(r["raw_path"]).startswith("/ws")][-1:]
    assert str(seen["raw_path"]).startswith("/ws?"), seen["raw_path"]
    assert "session_id=s1" in str(seen["raw_path"])
    assert RELAY_TOKEN not in json.dumps(seen), seen
    assert colab.AUTH_URL_PARAM not in str(seen["raw_path"]), seen["raw_path"]
    headers = dict(cast(list[tuple[str, str]], seen["headers"]))
    assert headers.get("Authorization") == f"token {BACKEND_TOKEN}", headers


async def test_relay_proxied_ws_refusal_keeps_its_status(relay_target: Target) -> None:
    """A kernel that does not exist: 404 JSON naming the websocket, not a bare 500/502."""
    path = "api/kernels/00000000-0000-0000-0000-000000000000/channels"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await relay_target.ws_connect(f"http_over_websocket/proxied_ws/{path}")
    assert refused.value.status == 404, refused.value
    handshake = {
        "Accept": "application/json",
        "Origin": COLAB_ORIGIN,
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    url = relay_target.url(f"http_over_websocket/proxied_ws/{path}")
    async with relay_target.session.get(url, headers=handshake) as resp:
        assert resp.status == 404, await resp.text()
        body = await resp.json()
    assert body["message"] == f"The backend refused the websocket /{path} with 404", body


async def test_relay_backend_stopped_then_killed_under_live_requests(colab_work: Path) -> None:
    """A Jupyter that stops answering (504), then dies (502): every request gets its done."""
    root = colab_work / unique("dying")
    root.mkdir()
    server = start_jupyter(root, colab_work)
    try:
        running = await start_relay([f"lab={server.backend_arg}"], colab=True, backend_timeout="2")
        try:
            where = Endpoint("relay-dying", running.base_url, root)
            async with colab_page(where) as page, page.bridge() as sock:
                assert (await sock.request("GET", "/api/contents")).status == 200
                os.kill(server.proc.pid, signal.SIGSTOP)
                started = time.monotonic()
                stopped = await sock.request("GET", "/api/contents", timeout=FAIL_BOUND)
                waited = time.monotonic() - started
                assert stopped.status == 504, stopped.describe()
                assert waited < 2 + 5 + 3, waited

                waiting = unread_requests(server.port)
                pending = await sock.submit("GET", "/api/contents")
                # Killed once the request is at the stopped backend, unread: it is live.
                await eventually(
                    lambda: unread_requests(server.port) - waiting,
                    timeout=FAIL_BOUND,
                    what="the request in the stopped backend's socket",
                )
                server.proc.kill()  # SIGKILL: a stopped process dies too
                server.proc.wait()
                killed = await sock.reply(pending, FAIL_BOUND)
                assert killed.status in (502, 504), killed.describe()
                assert killed.status_text, killed.messages
                print(
                    f"\nbackend stopped: {stopped.status} after {waited:.2f} s; "
                    f"killed: {killed.status} {killed.status_text!r}"
                )

                started = time.monotonic()
                gone = await sock.request("GET", "/api/kernelspecs", timeout=FAIL_BOUND)
                assert gone.status == 502, gone.describe()
                assert time.monotonic() - started < 5
                # The socket itself still works.
                await sock.send("not json")
                assert (await sock.next_untagged())["status"] == 400
        finally:
            await running.stop()
    finally:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


@contextlib.asynccontextmanager
async def cutting_server(cut: asyncio.Event) -> AsyncIterator[int]:
    """An HTTP server whose /cut promises 10 MiB, sends 256 KiB, and drops the connection
    once `cut` is set; any other path gets `{}`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b" /cut" in head.split(b"\r\n", 1)[0]:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n" % (10 << 20))
                writer.write(b"\x01" * (256 << 10))
                await writer.drain()
                await cut.wait()
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        cut.set()
        server.close()
        await server.wait_closed()


async def test_relay_backend_fails_mid_body() -> None:
    """The body breaks off after 256 KiB of 10 MiB: the stream still ends, once, with 502."""
    cut = asyncio.Event()
    async with cutting_server(cut) as port:
        running = await start_relay([f"cut=http://127.0.0.1:{port}/"], colab=True)
        try:
            where = Endpoint("relay-cut", running.base_url, Path())
            async with colab_page(where) as page, page.bridge() as sock:
                message_id = await sock.submit("GET", "/cut")
                await eventually(
                    lambda: sock.replies[message_id],
                    timeout=FAIL_BOUND,
                    interval=0.01,
                    what="the first part of the reply",
                )
                cut.set()
                reply = await sock.reply(message_id, FAIL_BOUND)
                assert (await sock.request("GET", "/other")).status == 200
        finally:
            await running.stop()
    assert reply.status == 200  # the status line had been sent already
    assert len(reply.body) <= 256 << 10
    assert reply.final["done"] is True and reply.final.get("status") == 502, reply.final


async def test_relay_hundred_slow_requests_at_once(echo_relay: tuple[Echo, RunningRelay]) -> None:
    """100 requests of 0.25 s on one socket: far faster than one after another, yet at
    MAX_IN_FLIGHT (32) in flight, so at least 4 rounds."""
    _, relay = echo_relay
    delay = 0.25
    where = Endpoint("relay-echo", relay.base_url, Path())
    async with colab_page(where) as page, page.bridge() as sock:
        started = time.monotonic()
        for _ in range(3):
            assert (await sock.request("GET", f"/slow?s={delay}")).status == 200
        one = (time.monotonic() - started) / 3
        started = time.monotonic()
        ids = [await sock.submit("GET", f"/slow?s={delay}") for _ in range(100)]
        replies = [await sock.reply(message_id, 60) for message_id in ids]
        seconds = time.monotonic() - started
        assert sorted(sock.finished[3:]) == sorted(ids)
    assert {(r.status, r.body) for r in replies} == {(200, b"finally")}
    print(f"\n100 requests of {delay} s on one socket: {seconds:.2f} s (one: {one:.2f} s)")
    assert seconds < 100 * one / 4, (seconds, one)
    rounds = -(-100 // colab.MAX_IN_FLIGHT)
    assert seconds >= rounds * delay * 0.95, (seconds, rounds)


async def test_relay_proxied_ws_keeps_frames_and_close_codes(
    echo_relay: tuple[Echo, RunningRelay],
) -> None:
    echo, relay = echo_relay
    async with colab_page(Endpoint("relay-echo", relay.base_url, Path())) as page:
        async with page.proxied("ws", protocols=("chosen",)) as ws:
            assert ws.protocol == "chosen"
            await ws.send_str("text frame")
            msg = await ws.receive(timeout=10)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "text frame")
            blob = bytes(range(256)) * 4
            await ws.send_bytes(blob)
            msg = await ws.receive(timeout=10)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, blob)
            # The backend closes with 4321: the client sees that code and reason.
            await ws.send_str("close:4321:bye now")
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.CLOSE, msg
            assert (msg.data, msg.extra) == (4321, "bye now")
        # The client closes with 4100: the backend sees 4100.
        before = len(echo.close_codes)
        async with page.proxied("ws") as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=10)).data == "ping"
            await ws.close(code=4100, message=b"client done")
        await eventually(
            lambda: len(echo.close_codes) > before,
            timeout=10,
            interval=0.02,
            what="the backend sees the close",
        )
        assert echo.close_codes[-1] == 4100, echo.close_codes
