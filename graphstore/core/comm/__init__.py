"""Connections between graphstore processes: TCP on Tornado, a token handshake, framed
msgpack messages.

One concern per module: ``addressing`` (``tcp://HOST:PORT``), ``tuning`` (socket options,
dead-peer timeouts), ``handshake`` (the HMAC challenge-response over the cluster token),
``tls_errors`` (why a TLS handshake failed), ``frames`` (memory for large frames),
``errors`` (a failed request's exception as a record and back), ``connection`` (``Comm``,
the batched connection), ``client`` (``connect``) and ``server`` (``CommServer``). With a ``TLSConfig`` (``core/tls.py``), connections are mutual TLS first
and the token handshake runs inside it.
"""
from graphstore.core.comm.addressing import parse_address
from graphstore.core.comm.client import connect
from graphstore.core.comm.connection import Comm, ReplyThenRun
from graphstore.core.comm.errors import RemoteCallError
from graphstore.core.comm.server import CommServer
from graphstore.core.comm.tuning import set_dead_peer_timeout

__all__ = ["Comm", "CommServer", "RemoteCallError", "ReplyThenRun", "connect",
           "parse_address", "set_dead_peer_timeout"]
