"""Accepting connections: each runs the handshake before it becomes a ``Comm``."""
from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, Callable

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from graphstore.core.comm.connection import Comm
from graphstore.core.comm.handshake import server_handshake
from graphstore.core.comm.tls_errors import server_tls_failure, tls_failure
from graphstore.core.comm.tuning import tune_stream
from graphstore.core.config import Limits
from graphstore.core.tls import TLSConfig
from graphstore.exceptions import AuthenticationError, ProtocolError, TLSError

logger = logging.getLogger("graphstore.comm")


class CommServer(TCPServer):
    """Accepts connections, runs the handshake, then hands each ``Comm`` to ``on_comm``.

    With ``tls``, a client must complete a mutual TLS handshake (its certificate signed
    by the cluster CA) before the token handshake starts; both within
    ``handshake_timeout``."""

    def __init__(self, token: bytes, on_comm: Callable[[Comm], Any], *,
                 tls: TLSConfig | None = None, limits: Limits | None = None,
                 split_bytes: int = 64 * 1024, handshake_timeout: float = 10.0):
        super().__init__(max_buffer_size=(limits or Limits()).max_header_bytes + 1024,
                         ssl_options=tls.server_context if tls else None)
        self.token = token
        self.tls = tls
        self.on_comm = on_comm
        self.limits = limits or Limits()
        self.split_bytes = split_bytes
        self.handshake_timeout = handshake_timeout
        self._bound: tuple | None = None

    def add_sockets(self, sockets) -> None:
        """Serve ``sockets`` (``listen`` calls this too); the first names ``bound_address``."""
        sockets = list(sockets)
        if sockets and self._bound is None:
            self._bound = sockets[0].getsockname()
        super().add_sockets(sockets)

    def bound_address(self) -> tuple:
        """``(host, port, ...)`` of the first socket served: the port ``listen(0)`` chose."""
        if self._bound is None:
            raise RuntimeError("the server is not listening yet: call listen() or add_sockets() first")
        return self._bound

    async def _handshake(self, stream: IOStream) -> None:
        if isinstance(stream, SSLIOStream):
            if stream.closed():        # the TLS handshake failed before this ran
                failure = tls_failure(stream.error) if stream.error else None
                raise TLSError(server_tls_failure(failure) if failure else
                               "closed during the TLS handshake")
            try:
                await stream.wait_for_handshake()
            except (OSError, StreamClosedError) as exc:
                failure = tls_failure(exc)
                if failure is None:
                    raise
                raise TLSError(server_tls_failure(failure)) from None
        await server_handshake(stream, self.token, self.handshake_timeout)

    async def handle_stream(self, stream: IOStream, address) -> None:
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        tune_stream(stream)
        try:
            # The whole handshake has a deadline: TLS writes wait for the peer.
            await asyncio.wait_for(self._handshake(stream), self.handshake_timeout)
        except asyncio.TimeoutError:
            if self.tls is not None and getattr(stream, "_ssl_accepting", False):
                logger.warning("refused connection from %s: no TLS handshake within %g s "
                               "(a client without TLS settings?)", peer,
                               self.handshake_timeout)
            else:
                logger.info("connection from %s closed during handshake (TimeoutError)",
                            peer)
            stream.close()
            return
        except (AuthenticationError, ProtocolError) as exc:
            logger.warning("refused connection from %s: %s", peer, exc)
            stream.close()
            return
        except (OSError, StreamClosedError, struct.error) as exc:
            logger.info("connection from %s closed during handshake (%s)", peer,
                        type(exc).__name__)
            stream.close()
            return
        comm = Comm(stream, peer, self.limits, self.split_bytes)
        self.on_comm(comm)
