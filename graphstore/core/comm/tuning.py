"""Socket options every graphstore connection gets: no Nagle delay, and TCP keepalive
plus ``TCP_USER_TIMEOUT`` so that a vanished peer closes the connection by itself."""
from __future__ import annotations

import socket

from tornado.iostream import IOStream

#: TCP keepalive: an idle connection whose peer vanished (host down, network cut) is
#: closed by the kernel after about KEEPIDLE + KEEPINTVL * KEEPCNT seconds; data left
#: unacknowledged for USER_TIMEOUT ms closes it too. Heartbeats catch it sooner where
#: they run (scheduler <-> workers); this bounds every other wait (drivers, transfers).
#: Set from ``worker_timeout`` by ``set_dead_peer_timeout``.
_KEEPALIVE = [("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 3),
              ("TCP_USER_TIMEOUT", 20_000)]


def set_dead_peer_timeout(seconds: float) -> None:
    """Have the kernel close connections whose peer has been unreachable for about
    ``seconds`` to twice that (processes call it with their ``worker_timeout``)."""
    seconds = max(1.0, float(seconds))
    _KEEPALIVE[:] = [("TCP_KEEPIDLE", max(1, int(seconds))),
                     ("TCP_KEEPINTVL", max(1, int(seconds / 3))), ("TCP_KEEPCNT", 3),
                     ("TCP_USER_TIMEOUT", int(2000 * seconds))]


def tune_stream(stream: IOStream) -> None:
    sock = stream.socket
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    stream.max_write_buffer_size = None
