"""The outside tools some tests need, or a failure that says how to get them (never a skip)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from .browser import CHROMIUM

JS_DIR = Path(__file__).resolve().parent / "js"


def missing(what: str) -> NoReturn:
    pytest.fail(f"{what}; run scripts/test, which installs the test dependencies")


def need_node() -> str:
    """The node binary, with @jupyterlab/services installed in tests/js."""
    if not (JS_DIR / "node_modules" / "@jupyterlab" / "services").is_dir():
        missing(f"{JS_DIR / 'node_modules'} lacks @jupyterlab/services (npm ci in tests/js)")
    node = shutil.which("node")
    if node is None:
        missing("node is not on PATH")
    return node


def need_chromium() -> None:
    if not Path(CHROMIUM).is_file():
        missing(f"{CHROMIUM} is missing (Debian package chromium)")
