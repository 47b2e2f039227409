"""Opening a connection: TCP, then mutual TLS if configured, then the token handshake."""
from __future__ import annotations

import asyncio
import struct

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from graphstore.core.comm.addressing import parse_address
from graphstore.core.comm.connection import Comm
from graphstore.core.comm.handshake import ANSWER, client_handshake
from graphstore.core.comm.tls_errors import tls_failure
from graphstore.core.comm.tuning import tune_stream
from graphstore.core.config import Limits
from graphstore.core.tls import TLSConfig, explain_handshake_failure, not_tls_message
from graphstore.exceptions import ConnectionLostError, TLSError


async def connect(address: str, token: bytes, *, tls: TLSConfig | None = None,
                  limits: Limits | None = None, split_bytes: int = 64 * 1024,
                  timeout: float = 10.0) -> Comm:
    """Open an authenticated ``Comm`` to ``tcp://host:port``; with ``tls``, over mutual
    TLS. A refused certificate raises ``TLSError`` saying whose and why."""
    host, port = parse_address(address)
    limits = limits or Limits()
    try:
        stream = await asyncio.wait_for(
            TCPClient().connect(host, port, max_buffer_size=limits.max_header_bytes + 1024),
            timeout)
    except (OSError, StreamClosedError, asyncio.TimeoutError) as exc:
        raise ConnectionLostError(f"could not connect to {address}: {exc}") from None
    if tls is not None:
        stream = await start_tls(stream, host, address, tls, timeout)
    tune_stream(stream)
    try:
        await client_handshake(stream, token, timeout, address)
    except (OSError, StreamClosedError, asyncio.TimeoutError, struct.error) as exc:
        stream.close()
        failure = tls_failure(exc)
        if failure is not None and tls is not None:
            raise TLSError(explain_handshake_failure(failure, address, tls)) from None
        if isinstance(exc, ConnectionLostError):
            raise
        raise ConnectionLostError(f"handshake with {address} failed: "
                                  f"{type(exc).__name__} {exc}") from None
    except Exception:
        stream.close()
        raise
    return Comm(stream, address, limits, split_bytes)



#: What a TLS client sends a server that greeted it in plain text, so that the server's
#: log says a TLS client came (a TLS handshake record header, then padding).
TLS_RECORD_HINT = b"\x16\x03\x01" + b"\x00" * (ANSWER.size - 3)


async def start_tls(stream: IOStream, host: str, address: str, tls: TLSConfig,
                     timeout: float) -> SSLIOStream:
    """The client side of the TLS handshake on a connected stream."""
    try:
        return await asyncio.wait_for(
            stream.start_tls(False, ssl_options=tls.client_context, server_hostname=host),
            timeout)
    except (OSError, StreamClosedError, asyncio.TimeoutError) as exc:   # SSLError too
        failure = tls_failure(exc)
        if failure is not None:
            raise TLSError(explain_handshake_failure(failure, address, tls)) from None
        raise ConnectionLostError(f"TLS handshake with {address} failed: "
                                  f"{type(exc).__name__} {exc}") from None
    except ValueError as exc:
        if "not idle" not in str(exc):
            raise
        # Tornado cannot start TLS on a stream that already received bytes: a server
        # without TLS greets first.
        try:
            await stream.write(TLS_RECORD_HINT)
        except StreamClosedError:
            pass
        stream.close()
        raise TLSError(not_tls_message(address, "it greeted in plain text")) from None
