"""One HTTP call read whole, and the check that an answer is Jupyter's JSON error shape."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Answer:
    status: int
    body: Any  # parsed JSON, or None
    text: str
    content_type: str
    seconds: float


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    timeout: float = 60,
) -> Answer:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        async with session.request(method, url, json=json_body) as resp:
            text = await resp.text()
            content_type = resp.content_type
            status = resp.status
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    return Answer(status, body, text, content_type, time.monotonic() - started)


def assert_error(answer: Answer, status: int, *names: str) -> str:
    """A Jupyter-shaped JSON error with this status whose message names each of `names`."""
    assert answer.status == status, (answer.status, answer.text)
    assert answer.content_type == "application/json", (answer.content_type, answer.text)
    assert isinstance(answer.body, dict), answer.text
    assert {"message", "reason"} <= answer.body.keys(), answer.body
    message = answer.body["message"]
    assert isinstance(message, str) and message, answer.body
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", message), (name, message)
    return message
