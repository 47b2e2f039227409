"""Telling a failed TLS handshake apart from other connection failures, and saying why."""
from __future__ import annotations

import ssl

from tornado.iostream import StreamClosedError


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed read, write or connect, if that is what it was."""
    if isinstance(exc, ssl.SSLError):
        return exc
    if isinstance(exc, StreamClosedError) and isinstance(exc.real_error, ssl.SSLError):
        return exc.real_error
    return None


def server_tls_failure(exc: BaseException) -> str:
    """A server's log line for a client whose TLS handshake failed."""
    detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
    if str(detail) == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        detail = "the client presented no certificate"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"the client's certificate failed verification: {detail}"
    return f"TLS handshake failed: {str(detail).lower().replace('_', ' ')}"
