"""Upstream sockets acknowledge at once (TCP_QUICKACK re-armed after each read)."""

from __future__ import annotations

import socket

import aiohttp

from jupyter_relay.backends.tcp import QUICKACK, QuickAckConnector, QuickAckHandler

from .echo_app import run_echo


async def test_connections_rearm_quickack_after_reads() -> None:
    assert QUICKACK is not None, "the relay targets Linux, which has TCP_QUICKACK"
    async with run_echo() as echo:
        connector = QuickAckConnector()
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{echo.port}/echo/x") as resp:
                    assert resp.status == 200
                    await resp.read()
            pooled = [proto for conns in connector._conns.values() for proto, _ in conns]
            assert pooled, "the connection was not kept alive"
            for proto in pooled:
                assert isinstance(proto, QuickAckHandler)
                sock = proto.transport.get_extra_info("socket")  # type: ignore[union-attr]
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, QUICKACK) == 1
