"""A small kernel-protocol client for the tests: legacy JSON and v1 binary frames."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

V1 = "v1.kernel.websocket.jupyter.org"


def encode_v1(channel: str, parts: list[bytes]) -> bytes:
    """The v1 frame: count, offset table, channel name, message parts."""
    chan = channel.encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(chan))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = struct.pack("<Q", len(offsets)) + b"".join(struct.pack("<Q", o) for o in offsets)
    return head + chan + b"".join(parts)


def decode_v1(data: bytes) -> tuple[str, list[bytes]]:
    (count,) = struct.unpack_from("<Q", data, 0)
    offsets = [struct.unpack_from("<Q", data, 8 * (i + 1))[0] for i in range(count)]
    channel = data[offsets[0] : offsets[1]].decode()
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
    return channel, parts


def make_message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "test",
            "session": session,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "buffers": [],
        "channel": "shell",
    }


async def send(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> None:
    if ws.protocol == V1:
        parts = [
            json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")
        ]
        await ws.send_bytes(encode_v1(msg["channel"], parts))
    else:
        await ws.send_str(json.dumps(msg))


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.BINARY and ws.protocol == V1:
        channel, parts = decode_v1(msg.data)
        header, parent, metadata, content = (json.loads(p) for p in parts[:4])
        return {
            "channel": channel,
            "header": header,
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
            "buffers": parts[4:],
        }
    if msg.type is aiohttp.WSMsgType.TEXT:
        data: dict[str, Any] = json.loads(msg.data)
        return data
    if msg.type is aiohttp.WSMsgType.BINARY:
        # Legacy binary frames carry buffers; the JSON part is after the offset table.
        (count,) = struct.unpack_from(">I", msg.data, 0)
        offsets = [struct.unpack_from(">I", msg.data, 4 * (i + 1))[0] for i in range(count)]
        data = json.loads(msg.data[offsets[0] : offsets[1] if count > 1 else None])
        return data
    raise ConnectionError(f"websocket ended: {msg.type} {msg.data!r} {msg.extra!r}")


async def execute(
    ws: aiohttp.ClientWebSocketResponse, code: str, session: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Run `code`; return the text it printed (stdout and results) and the reply."""
    msg = make_message(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        session or uuid.uuid4().hex,
    )
    await send(ws, msg)
    msg_id = msg["header"]["msg_id"]
    out: list[str] = []
    reply: dict[str, Any] | None = None
    idle = False
    while reply is None or not idle:
        incoming = await receive(ws)
        if incoming.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = incoming["header"]["msg_type"]
        if kind == "stream":
            out.append(incoming["content"]["text"])
        elif kind == "execute_result":
            out.append(incoming["content"]["data"].get("text/plain", ""))
        elif kind == "error":
            out.append("\n".join(incoming["content"]["traceback"]))
        elif kind == "execute_reply":
            reply = incoming
        elif kind == "status" and incoming["content"]["execution_state"] == "idle":
            idle = True
    return "".join(out), reply


async def start_kernel(session: aiohttp.ClientSession, base: str, name: str = "python3") -> str:
    """POST /api/kernels at `base`; return the new kernel's id."""
    async with session.post(base + "api/kernels", json={"name": name}) as resp:
        text = await resp.text()
        assert resp.status == 201, (resp.status, text)
        kernel_id: str = json.loads(text)["id"]
    return kernel_id


async def run_code(session: aiohttp.ClientSession, base: str, kernel_id: str, code: str) -> str:
    """Execute `code` on the kernel over a new v1 websocket; return what it printed, stripped."""
    async with asyncio.timeout(60):
        url = f"{base}api/kernels/{kernel_id}/channels"
        async with session.ws_connect(url, protocols=(V1,)) as ws:
            assert ws.protocol == V1
            out, reply = await execute(ws, code)
    assert reply["content"]["status"] == "ok", (out, reply)
    return out.strip()
