"""The one table from a failure on the way to a backend to the relay's own error.

aiohttp's, ssl's and the socket module's exceptions, whichever engine or client met
them, become a `BackendError` of `errors.py` that names the backend and says what to
do (as httpx maps the exceptions of its transports to its own tree in one place).
"""

from __future__ import annotations

import os
import socket
import ssl

import aiohttp

from .errors import (
    BackendError,
    BackendTimeout,
    BackendTLSError,
    BackendUnreachable,
)


class ClosedEarly(ConnectionResetError):
    """The backend closed the connection before its answer was complete."""


def translate_client_error(
    backend: str, exc: BaseException, address: str | None = None
) -> BackendError:
    """Map an aiohttp or socket error on the way to `backend` to a specific relay error.

    `address` (host:port) names the peer when the error itself does not (raw
    socket errors from the fast path).
    """
    if isinstance(exc, BackendError):
        return exc
    client_cert = _client_cert_refusal(backend, exc)
    if client_cert is not None:
        return client_cert
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _tls_error(backend, exc.certificate_error, exc.host)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _tls_error(backend, exc, address or "")
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return BackendTLSError(backend, f"TLS handshake with backend '{backend}' failed: {exc}")
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return BackendTimeout(
            backend,
            f"backend '{backend}' did not answer in time; it may be overloaded or hung",
            "did not answer in time",
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _dns_error(backend, exc.host)
    if isinstance(exc, socket.gaierror):
        return _dns_error(backend, (address or "").rpartition(":")[0])
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _unreachable(backend, f"{exc.host}:{exc.port}", exc.os_error)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, ClosedEarly)):
        return BackendUnreachable(
            backend, f"backend '{backend}' closed the connection", "closed the connection"
        )
    if isinstance(exc, OSError) and exc.errno and address:
        return _unreachable(backend, address, exc)
    return BackendUnreachable(backend, f"backend '{backend}' failed: {exc}", str(exc))


# TLS alerts of a server that wants a client certificate (TLS 1.3 sends them after the
# handshake, so they surface on the first read, as an OSError).
_NO_CLIENT_CERT = ("CERTIFICATE_REQUIRED",)
_BAD_CLIENT_CERT = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN")


def _client_cert_refusal(backend: str, exc: BaseException) -> BackendTLSError | None:
    text = str(exc)
    upper = text.upper()
    if not isinstance(exc, OSError) or "[SSL" not in upper:
        return None
    detail = text.partition("] ")[2].partition(" (_ssl")[0] or text
    if any(alert in upper for alert in _NO_CLIENT_CERT):
        return BackendTLSError(
            backend,
            f"backend '{backend}' requires a TLS client certificate ({detail}); give one "
            "with --client-cert and --client-key (or client_cert=, client_key= in the URI)",
        )
    if any(alert in upper for alert in _BAD_CLIENT_CERT):
        return BackendTLSError(
            backend,
            f"backend '{backend}' refused the TLS client certificate ({detail}); give one "
            "that its CA issued with --client-cert and --client-key (or client_cert=, "
            "client_key= in the URI)",
        )
    return None


def _tls_error(backend: str, cert_err: BaseException, host: str) -> BackendTLSError:
    detail = (getattr(cert_err, "verify_message", None) or str(cert_err)).rstrip(".")
    if "mismatch" in detail.lower():
        hint = (
            "give the name its certificate carries with --tls-server-name "
            "(or tls_server_name= in the backend URI)"
        )
    else:
        hint = "give the CA that signed its certificate with --ca-cert (or ca_cert= in the URI)"
    where = f"backend '{backend}' ({host})"
    return BackendTLSError(backend, f"TLS verification of {where} failed: {detail}; {hint}")


def _dns_error(backend: str, host: str) -> BackendUnreachable:
    return BackendUnreachable(
        backend,
        f"backend '{backend}': cannot resolve host {host!r}; check its URL",
        f"cannot resolve host {host!r}",
    )


def _unreachable(backend: str, address: str, os_error: OSError) -> BackendUnreachable:
    why = os.strerror(os_error.errno) if os_error.errno else str(os_error)
    return BackendUnreachable(
        backend, f"backend '{backend}' at {address} is unreachable ({why}); is it running?", why
    )
