"""Logging that never shows a token.

Every line the relay logs passes through `RedactingFormatter`, which blanks
the secrets it was told about and any `token=` value; the access log records
the path without its query string.
"""

from __future__ import annotations

import logging
import re
import sys

_TOKEN_PARAM = re.compile(r"((?:token|_xsrf)=)[^&\s\"']+", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"((?:token|bearer)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


class RedactingFormatter(logging.Formatter):
    secrets: set[str] = set()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return redact(text)


def redact(text: str) -> str:
    for secret in RedactingFormatter.secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_PARAM.sub(r"\1***", text)
    return _AUTH_HEADER.sub(r"\1***", text)


def known_secrets() -> frozenset[str]:
    """Every secret registered so far (the relay's token, backends' tokens once learnt)."""
    return frozenset(RedactingFormatter.secrets)


def add_secret(value: str) -> None:
    """Register a value that must never appear in a log line."""
    if value:
        RedactingFormatter.secrets.add(value)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("[%(levelname).1s %(asctime)s %(name)s] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would print query strings: ours replaces it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # asyncssh logs every channel at INFO; the ssh backend says what matters itself.
    logging.getLogger("asyncssh").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


access_log = logging.getLogger("jupyter_relay.access")


def access_level(status: int) -> int:
    """How loud an answer is in the access log: 5xx WARNING, 4xx INFO, the rest DEBUG."""
    return logging.WARNING if status >= 500 else logging.INFO if status >= 400 else logging.DEBUG


def log_access(method: str, path: str, status: int, elapsed_ms: float) -> None:
    """One line a request: method, path without query, status, time."""
    level = access_level(status)
    if access_log.isEnabledFor(level):
        access_log.log(level, "%s %s %d %.1fms", method, path, status, elapsed_ms)
