"""How long and how much each scenario measures: the full run, and `--quick`."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    quick: bool
    # Small HTTP (wrk): connections, threads, seconds measured after a warm-up.
    http_connections: int
    wrk_threads: int
    http_warmup_s: float
    http_seconds: float
    # Websocket: ping-pong connections and message size; one streaming connection.
    ws_connections: int
    ws_message_bytes: int
    ws_big_bytes: int
    ws_window: int
    ws_seconds: float
    # Kernel execute round trips: v1 (the headline), legacy and @jupyterlab/services.
    executes_v1: int
    executes_other: int
    # Large transfer: each direction `transfer_repeats` times, the median kept.
    download_bytes: int
    upload_bytes: int
    transfer_repeats: int
    # Idle kernel websockets.
    idle_connections: int
    # JupyterLab page load: cold loads per path, after one discarded warm-up load.
    page_loads: int
    page_warmup: bool
    # Jupyter over SSH: executes (v1; legacy and services each), the size of each
    # download and upload, the cold page loads (fewer executes than kernel_execute: three
    # paths of round trips that take ~48 ms today).
    ssh_executes_v1: int
    ssh_executes_other: int
    ssh_transfer_bytes: int
    ssh_page_loads: int


FULL = Settings(
    quick=False,
    http_connections=32,
    wrk_threads=1,
    http_warmup_s=2,
    http_seconds=10,
    ws_connections=8,
    ws_message_bytes=100,
    ws_big_bytes=1_000_000,
    ws_window=4,
    ws_seconds=8,
    executes_v1=1000,
    executes_other=300,
    download_bytes=1024 * MIB,
    upload_bytes=256 * MIB,
    transfer_repeats=3,
    idle_connections=2000,
    page_loads=5,
    page_warmup=True,
    ssh_executes_v1=300,
    ssh_executes_other=100,
    ssh_transfer_bytes=256 * MIB,
    ssh_page_loads=9,
)

QUICK = Settings(
    quick=True,
    http_connections=32,
    wrk_threads=1,
    http_warmup_s=0.5,
    http_seconds=2,
    ws_connections=8,
    ws_message_bytes=100,
    ws_big_bytes=1_000_000,
    ws_window=4,
    ws_seconds=1.5,
    executes_v1=30,
    executes_other=20,
    download_bytes=64 * MIB,
    upload_bytes=32 * MIB,
    transfer_repeats=2,
    idle_connections=200,
    page_loads=2,
    page_warmup=False,
    ssh_executes_v1=20,
    ssh_executes_other=10,
    ssh_transfer_bytes=32 * MIB,
    ssh_page_loads=1,
)


def settings(quick: bool) -> Settings:
    return QUICK if quick else FULL
