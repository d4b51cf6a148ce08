"""A protocol client that behaves as Colab's page does towards a "local runtime".

Colab's frontend opens a WebSocket to `/http_over_websocket` (Origin
https://colab.research.google.com, `min_version` in the query), sends each HTTP request as
a JSON message and reassembles the answer from the messages tagged with its
`message_id`; a kernel's channels are opened through `/http_over_websocket/proxied_ws/`.
Every answer is checked against the protocol as it arrives (see `check_reply`): status,
statusText and headers on the first message, base64 chunks of at most 64 KiB raw, one
final `done: true`, nothing after it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from .kernel_client import execute

COLAB_ORIGIN = "https://colab.research.google.com"
BRIDGE = "http_over_websocket"
DIAGNOSE = "http_over_websocket/diagnose"
PROXIED = "http_over_websocket/proxied_ws/"
MAX_CHUNK = 64 * 1024
EXTENSION_VERSION = "0.0.7"
# What Colab's page sends: a pre-release, parsed as a version by the server.
COLAB_MIN_VERSION = "0.0.1a3"
FIRST_KEYS = {"message_id", "status", "statusText", "headers", "data", "done"}
LATER_KEYS = {"message_id", "data", "done"}
ERROR_KEYS = {"message_id", "status", "statusText", "done"}


def check_reply(messages: list[dict[str, Any]]) -> None:
    """Fail unless `messages` (one request's, in order) are a well-formed answer."""
    assert messages, "no message"
    first = messages[0]
    assert isinstance(first.get("status"), int), first
    assert isinstance(first.get("statusText"), str), first
    if "headers" in first:
        assert first.keys() <= FIRST_KEYS, first.keys()
        headers = first["headers"]
        assert isinstance(headers, dict), first
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()), headers
    else:  # an error of the bridge's own: no headers, no body, done at once
        assert first.keys() <= ERROR_KEYS, first.keys()
        assert len(messages) == 1, messages
    for index, later in enumerate(messages[1:], 1):
        if index == len(messages) - 1 and "status" in later:
            # A stream that failed after it began ends with an error message of its own.
            assert later.keys() <= ERROR_KEYS, later
            assert isinstance(later["status"], int) and isinstance(later["statusText"], str)
        else:
            assert later.keys() <= LATER_KEYS and "data" in later, later
    for index, message in enumerate(messages):
        if "data" in message:
            data = message["data"]
            assert isinstance(data, str), message
            try:
                raw = base64.b64decode(data, validate=True)
            except binascii.Error as exc:
                raise AssertionError(f"message {index}: data is not base64: {data[:80]!r}") from exc
            assert len(raw) <= MAX_CHUNK, f"message {index}: a chunk of {len(raw)} bytes"
        last = index == len(messages) - 1
        assert message.get("done") is last, f"message {index} of {len(messages)}: {message}"


@dataclass
class Reply:
    """The messages that answered one request, checked, and what they carry."""

    message_id: str
    messages: list[dict[str, Any]]

    @property
    def first(self) -> dict[str, Any]:
        return self.messages[0]

    @property
    def status(self) -> int:
        status: int = self.first["status"]
        return status

    @property
    def status_text(self) -> str:
        text: str = self.first["statusText"]
        return text

    @property
    def final(self) -> dict[str, Any]:
        """The last message (`done: true`); it has its own status if a stream broke off."""
        return self.messages[-1]

    @property
    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self.first.get("headers", {})
        return headers

    def header(self, name: str) -> str | None:
        """A response header, whatever the case of its name."""
        found = [v for k, v in self.headers.items() if k.lower() == name.lower()]
        return found[0] if found else None

    @property
    def chunks(self) -> list[bytes]:
        return [base64.b64decode(m["data"]) for m in self.messages if "data" in m]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def shape(self) -> tuple[frozenset[str], ...]:
        """The keys of the first message, then those of the later ones (each kind once)."""
        later = sorted({frozenset(m) for m in self.messages[1:]}, key=sorted)
        return (frozenset(self.first), *later)

    def describe(self) -> str:
        """For assertion messages: the status line and the start of the body."""
        return f"{self.status} {self.status_text}: {self.body[:300]!r}"


class ProtocolViolation(AssertionError):
    pass


@dataclass
class ColabSocket:
    """One `/http_over_websocket` connection; answers are collected by `message_id`."""

    ws: aiohttp.ClientWebSocketResponse
    # Messages per message_id, in the order they came.
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Every message's message_id (None when it had none), in the order they came.
    arrivals: list[str | None] = field(default_factory=list)
    # The message_ids in the order their requests finished (their `done: true` came).
    finished: list[str] = field(default_factory=list)
    # Messages without a message_id (the bridge's answer to input it could not parse).
    untagged: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    # Protocol violations seen by the reader: messages after done, unknown ids, non-JSON.
    violations: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    _done: dict[str, asyncio.Event] = field(default_factory=dict)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _count: int = 0

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._take(msg.data)
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    self.close_code = self.ws.close_code
                    self.close_reason = msg.extra if isinstance(msg.extra, str) else None
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        self.close_reason = str(msg.data)
                    break
                else:
                    self.violations.append(f"a {msg.type.name} frame: {msg.data!r:.200}")
        finally:
            self._closed.set()
            for event in self._done.values():
                event.set()

    def _take(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self.violations.append(f"not JSON: {text[:200]!r}")
            return
        if not isinstance(message, dict):
            self.violations.append(f"not an object: {text[:200]!r}")
            return
        message_id = message.get("message_id")
        self.arrivals.append(message_id)
        if message_id is None:
            self.untagged.put_nowait(message)
            return
        if message_id not in self.replies:
            self.violations.append(f"an answer to no request: {text[:200]!r}")
            return
        event = self._done[message_id]
        if event.is_set():
            self.violations.append(f"a message after done: {text[:200]!r}")
            return
        self.replies[message_id].append(message)
        if message.get("done") is True:
            self.finished.append(message_id)
            event.set()

    def new_id(self) -> str:
        self._count += 1
        return f"{self._count}-{uuid.uuid4().hex[:8]}"

    async def send(self, payload: Mapping[str, Any] | str, *, binary: bool = False) -> None:
        """Send a request message as is (a mapping is JSON-encoded), as text or binary."""
        if not isinstance(payload, str):
            message_id = payload.get("message_id")
            if isinstance(message_id, str) and message_id not in self.replies:
                self.replies[message_id] = []
                self._done[message_id] = asyncio.Event()
                if self._closed.is_set():  # no answer can come any more
                    self._done[message_id].set()
            payload = json.dumps(payload)
        if binary:
            await self.ws.send_bytes(payload.encode())
        else:
            await self.ws.send_str(payload)

    async def submit(
        self,
        method: str,
        path: str,
        *,
        body: str | None = None,
        body_base64: bytes | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send one request; return its message_id (wait for it with `reply`)."""
        message_id = message_id or self.new_id()
        request: dict[str, Any] = {"message_id": message_id, "method": method, "path": path}
        if body is not None:
            request["body"] = body
        if body_base64 is not None:
            request["body_base64"] = base64.b64encode(body_base64).decode()
        await self.send(request)
        return message_id

    async def settled(self, message_id: str, timeout: float = 60) -> None:
        """Wait until `message_id` is done or the socket has ended."""
        async with asyncio.timeout(timeout):
            await self._done[message_id].wait()

    async def reply(self, message_id: str, timeout: float = 60) -> Reply:
        """Wait for the final message of `message_id`; the answer, checked."""
        await self.settled(message_id, timeout)
        messages = self.replies[message_id]
        if not messages or messages[-1].get("done") is not True:
            raise ProtocolViolation(
                f"{message_id}: the socket ended ({self.close_code} {self.close_reason!r}) "
                f"before done: {messages}"
            )
        check_reply(messages)
        return Reply(message_id, messages)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: str | None = None,
        body_base64: bytes | None = None,
        json_body: Any = None,
        timeout: float = 60,
    ) -> Reply:
        """One HTTP request through the bridge, answered whole."""
        if json_body is not None:
            body = json.dumps(json_body)
        message_id = await self.submit(method, path, body=body, body_base64=body_base64)
        return await self.reply(message_id, timeout)

    async def next_untagged(self, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.untagged.get()

    async def wait_closed(self, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            await self._closed.wait()

    def assert_clean(self) -> None:
        """Nothing arrived that answered no request, came after done, or was not JSON."""
        if self.violations:
            raise ProtocolViolation("\n".join(self.violations))


@dataclass
class Target:
    """A server that speaks the protocol (the reference or the relay) and how to reach it.

    `query` goes on every websocket URL (the relay's token); `headers` on every handshake
    besides the Origin (cookies ride in `session`'s jar, as a browser's would).
    """

    name: str
    base: str
    session: aiohttp.ClientSession
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, endpoint: str, query: Mapping[str, str] | None = None) -> str:
        merged = {**self.query, **(query or {})}
        return f"{self.base}{endpoint}" + (f"?{urlencode(merged)}" if merged else "")

    async def ws_connect(
        self,
        endpoint: str,
        *,
        query: Mapping[str, str] | None = None,
        origin: str | None = COLAB_ORIGIN,
        protocols: tuple[str, ...] = (),
    ) -> aiohttp.ClientWebSocketResponse:
        headers = dict(self.headers)
        if origin is not None:
            headers["Origin"] = origin
        return await self.session.ws_connect(
            self.url(endpoint, query),
            headers=headers,
            protocols=protocols,
            max_msg_size=0,
            autoclose=False,
            heartbeat=None,
        )

    @contextlib.asynccontextmanager
    async def bridge(
        self, *, min_version: str | None = COLAB_MIN_VERSION, **query: str
    ) -> AsyncIterator[ColabSocket]:
        """`/http_over_websocket` as Colab opens it; fails on protocol violations at the end."""
        if min_version is not None:
            query["min_version"] = min_version
        ws = await self.ws_connect(BRIDGE, query=query)
        sock = ColabSocket(ws)
        sock.start()
        try:
            yield sock
            sock.assert_clean()
        finally:
            await ws.close()
            if sock._reader is not None:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await asyncio.wait_for(sock._reader, 10)

    @contextlib.asynccontextmanager
    async def proxied(
        self, path: str, *, query: Mapping[str, str] | None = None, protocols: tuple[str, ...] = ()
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A websocket to `path` (no leading slash) through `proxied_ws`."""
        ws = await self.ws_connect(PROXIED + path, query=query, protocols=protocols)
        try:
            yield ws
        finally:
            await ws.close()

    async def diagnose(
        self, *texts: str, min_version: str | None = COLAB_MIN_VERSION, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Send each text to `/http_over_websocket/diagnose`; the answers, in order."""
        query = {"min_version": min_version} if min_version is not None else {}
        answers: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            ws = await self.ws_connect(DIAGNOSE, query=query)
            try:
                for text in texts:
                    await ws.send_str(text)
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
                    answers.append(json.loads(msg.data))
            finally:
                await ws.close()
        return answers

    async def run_code(
        self, kernel_id: str, code: str, *, protocols: tuple[str, ...] = (), timeout: float = 60
    ) -> tuple[str, str | None]:
        """Execute `code` on the kernel through `proxied_ws`: (what it printed, subprotocol)."""
        async with asyncio.timeout(timeout):
            path = f"api/kernels/{kernel_id}/channels"
            query = {"session_id": uuid.uuid4().hex}
            async with self.proxied(path, query=query, protocols=protocols) as ws:
                out, reply = await execute(ws, code)
                protocol = ws.protocol
        assert reply["content"]["status"] == "ok", (out, reply)
        return out.strip(), protocol
