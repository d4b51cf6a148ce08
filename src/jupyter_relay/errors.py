"""The relay's own error tree.

Exceptions of aiohttp, ssl and the socket layer are translated into these in one
table (`translate.py`), and these are mapped to HTTP answers in one table
(`responses.ANSWERS`); the errors themselves know nothing of HTTP. Every error
carries a message that tells the user what went wrong and what to do.

    RelayError
    ├── ConfigError            bad flag, variable or file; refused at start
    ├── NotFound               no such kernel, session, kernelspec or backend
    ├── Forbidden              a host or port the port proxy may not reach
    └── BackendError           something about one named backend
        ├── BackendUnreachable     connection refused, DNS, reset
        ├── BackendTLSError        certificate verification failed
        ├── BackendTimeout         no answer within the bound
        ├── BackendAuthError       the backend refused our credentials
        ├── BackendBadAnswer       the backend's answer is not what Jupyter sends
        ├── BackendNotFound        the backend lacks what was asked (its own port proxy)
        └── BackendStartError      a backend the relay starts did not come up
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose.

    `reason`, when given, words the error's kind for this case (Jupyter's error
    shape has a `reason`); otherwise `responses.answer_of` names it.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class ConfigError(RelayError):
    """A configuration value that cannot be used; the message names the key."""


class NotFound(RelayError):
    """The request names something no backend has; the message says what exists."""


class Forbidden(RelayError):
    """The request is understood but not allowed; the message says how to allow it."""


class BackendError(RelayError):
    """A failure that concerns one backend, named in the message."""

    def __init__(self, backend: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        # The cause alone ("Connection refused"), for callers that word the message their way.
        self.detail = detail or message


class BackendUnreachable(BackendError):
    """Connection refused, a name that does not resolve, a reset."""


class BackendTLSError(BackendError):
    """The backend's certificate did not verify."""


class BackendTimeout(BackendError):
    """No answer within the bound."""


class BackendAuthError(BackendError):
    """The backend refused the relay's credentials."""


class BackendStartError(BackendError):
    """A backend the relay starts did not come up (or was stopped)."""


class BackendBadAnswer(BackendError):
    """The backend's answer is not what a Jupyter server sends."""


class BackendNotFound(BackendError):
    """The backend has not got what the request needs there (e.g. a port proxy of its own)."""
