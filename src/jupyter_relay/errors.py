"""The relay's own error tree.

Errors raised by aiohttp (and later asyncssh) are translated into these at the
forwarding boundary, and mapped to HTTP answers in one place
(`responses.error_response`). Every error carries a message that tells the user
what went wrong and what to do.

    RelayError
    ├── ConfigError            bad flag, variable or file; refused at start
    ├── NotFound               404: no such kernel, session, kernelspec or backend
    ├── Forbidden              403: a host or port the port proxy may not reach
    └── BackendError           something about one named backend
        ├── BackendUnreachable     502: connection refused, DNS, reset
        ├── BackendTLSError        502: certificate verification failed
        ├── BackendTimeout         504: no answer within the bound
        ├── BackendAuthError       the backend refused our credentials
        ├── BackendBadAnswer       502: the backend's answer is not what Jupyter sends
        └── BackendStartError      503: a backend the relay starts did not come up
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""

    status = 500
    reason = "Relay Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RelayError):
    """A configuration value that cannot be used; the message names the key."""

    status = 400
    reason = "Bad Configuration"


class NotFound(RelayError):
    """The request names something no backend has; the message says what exists."""

    status = 404
    reason = "Not Found"


class Forbidden(RelayError):
    """The request is understood but not allowed; the message says how to allow it."""

    status = 403
    reason = "Forbidden"


class BackendError(RelayError):
    """A failure that concerns one backend, named in the message."""

    status = 502
    reason = "Bad Gateway"

    def __init__(self, backend: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        # The cause alone ("Connection refused"), for callers that word the message their way.
        self.detail = detail or message


class BackendUnreachable(BackendError):
    status = 502
    reason = "Backend Unreachable"


class BackendTLSError(BackendError):
    status = 502
    reason = "Backend TLS Verification Failed"


class BackendTimeout(BackendError):
    status = 504
    reason = "Backend Timeout"


class BackendAuthError(BackendError):
    status = 502
    reason = "Backend Refused Credentials"


class BackendStartError(BackendError):
    status = 503
    reason = "Backend Not Started"


class BackendBadAnswer(BackendError):
    status = 502
    reason = "Invalid Backend Answer"
