"""The mixer's calls to a backend's REST API: one JSON request, bounded in time and size.

Unlike the forwarder, the mixer reads answers whole, because it rewrites
them; Jupyter's kernel and session answers are small, and a bound keeps a
misbehaving backend from growing the relay's memory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp
from yarl import URL

from ..backends import Backend
from ..errors import BackendBadAnswer
from ..translate import translate_client_error

ANSWER_LIMIT = 16 * 1024 * 1024
# Jupyter checks XSRF on state-changing requests that a token did not authenticate
# (a backend without a token): a cookie and a header that agree satisfy it.
XSRF = secrets.token_hex(16)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Answer:
    """A backend's answer: status, parsed JSON (None if empty or not JSON), Location."""

    status: int
    data: Any
    location: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def call(
    backend: Backend,
    method: str,
    path: str,
    *,
    timeout: float,
    body: Any = None,
) -> Answer:
    """Send one request to `path` (relative to the backend's base URL), read its JSON.

    Raises the relay's BackendError family when the backend cannot be reached,
    does not answer within `timeout`, or sends a success that is not JSON.
    """
    up = backend.upstream()
    url = URL(up.origin + up.base_url.raw_path + path, encoded=True)
    headers = dict(up.credentials)
    headers["Accept"] = "application/json"
    headers["Accept-Encoding"] = "identity"
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if method in UNSAFE:
        headers["X-XSRFToken"] = XSRF
        headers["Cookie"] = f"_xsrf={XSRF}"
    try:
        async with asyncio.timeout(timeout):
            async with up.client.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                server_hostname=up.server_hostname,
            ) as resp:
                raw = await read_bounded(resp.content, ANSWER_LIMIT)
                status, location = resp.status, resp.headers.get("Location")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise backend.explain(translate_client_error(backend.name, exc)) from exc
    instead = await backend.answered(status, location)
    if instead is not None:  # e.g. a hub saying the user's server is gone
        raise instead
    where = f"backend '{backend.name}' answered {method} /{path}"
    if len(raw) > ANSWER_LIMIT:
        raise BackendBadAnswer(backend.name, f"{where} with more than {ANSWER_LIMIT} bytes")
    parsed: Any = None
    if raw.strip():
        try:
            parsed = json.loads(raw)
        except RecursionError as exc:  # a JSON parser's stack is no backend's to exhaust
            if 200 <= status < 300:
                raise BackendBadAnswer(
                    backend.name, f"{where} with JSON nested too deeply to read"
                ) from exc
        except ValueError as exc:
            if 200 <= status < 300:
                raise BackendBadAnswer(
                    backend.name, f"{where} with invalid JSON ({exc}); is it a Jupyter server?"
                ) from exc
    return Answer(status, parsed, location)


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first `limit + 1` bytes if longer (the caller refuses those).

    One `read(n)` returns what has arrived so far, which for a large answer is
    only its first chunk.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def error_body(backend: str, answer: Answer) -> dict[str, Any]:
    """A backend's error answer in Jupyter's shape, naming the backend if it gave no JSON."""
    data = answer.data
    if isinstance(data, dict) and "message" in data:
        reason = data.get("reason")
        if not data["message"] and isinstance(reason, str) and reason:
            # Tornado's HTTPError(status, reason=...) of the Kernel and Enterprise Gateways:
            # the sentence in `reason`, `message` empty. Clients show `message`.
            return {**data, "message": reason, "reason": _phrase(answer.status)}
        return data
    return {
        "message": f"backend '{backend}' answered HTTP {answer.status}",
        "reason": "Backend Error",
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Backend Error"
