"""The six scenarios of issue 3, and Jupyter over SSH (issue 19)."""

from __future__ import annotations

from .base import Scenario
from .idle_websockets import IdleWebsockets
from .kernel_execute import KernelExecute
from .large_transfer import LargeTransfer
from .page_load import PageLoad
from .small_http import SmallHttp
from .ssh import Ssh
from .websocket import Websocket


def all_scenarios() -> list[Scenario]:
    """Every scenario, in the issue's order (the order of the table and the chart)."""
    return [
        SmallHttp(),
        Websocket(),
        KernelExecute(),
        LargeTransfer(),
        IdleWebsockets(),
        PageLoad(),
        Ssh(),
    ]


NAMES = tuple(s.name for s in all_scenarios())
# The order of measuring: idle websockets before the large transfer, whose
# buffers a proxy may still be handing back to the system (jupyter-server-proxy
# holds whole bodies) and which would make its memory shrink while measured.
RUN_ORDER = (
    "small_http",
    "websocket",
    "kernel_execute",
    "idle_websockets",
    "large_transfer",
    "page_load",
    "ssh",
)
