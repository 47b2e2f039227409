"""TCP connections between graphstore processes, on Tornado ``IOStream``.

A ``Comm`` is one authenticated connection. It batches small messages (a batch is sent on
the next loop iteration when the link is idle, and grows while a write is in flight), reads
large frames into preallocated memory with ``read_into``, and matches ``Reply`` messages to
requests. Every connection starts with an HMAC challenge-response over the cluster token, so
nothing is unpickled, or even msgpack-decoded, before the peer has proved it knows the token;
the token never crosses the wire.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import os
import socket
import struct
import inspect
from typing import Any, Callable

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from graphstore import protocol
from graphstore.config import PROTOCOL_VERSION, Limits
from graphstore.exceptions import AuthenticationError, ConnectionLostError, ProtocolError
from graphstore.protocol import Reply, Request

logger = logging.getLogger("graphstore.comm")

_MAGIC = b"GSTR"
_HELLO = struct.Struct("!4sH16s")           # magic, version, server nonce
_ANSWER = struct.Struct("!4sH16s32s")       # magic, version, client nonce, client proof
_VERDICT = struct.Struct("!B32s")           # status (0 ok), server proof or reason

#: Frames smaller than this are read together in one call and sliced.
_SMALL_FRAME = 64 * 1024
#: How much one partial read asks for.
_READ_CHUNK = 256 * 1024


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://host:port`` (or ``host:port``) to ``(host, port)``, with a clear error."""
    text = address
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid address {address!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)


def _proof(token: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token, label + a + b, hashlib.sha256).digest()


def _tune(stream: IOStream) -> None:
    sock = stream.socket
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream.max_write_buffer_size = None


class Comm:
    """An authenticated, batched, message-oriented connection.

    ``handler(comm, message)`` is called for each incoming non-reply message; if it
    returns an awaitable, it is awaited before the next message of the same batch only when
    it is a request (replies are sent when it completes).
    """

    def __init__(self, stream: IOStream, peer: str, limits: Limits, split_bytes: int):
        self.stream = stream
        self.peer = peer
        self.limits = limits
        self.split_bytes = split_bytes
        self.handler: Callable[["Comm", Any], Any] | None = None
        self.on_close: list[Callable[["Comm"], None]] = []
        self.closed = False
        self.info: dict = {}
        self._outbox: list = []
        self._flush_scheduled = False
        self._writing = False
        self._write_future = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._loop = asyncio.get_event_loop()

    # -- sending ------------------------------------------------------------------------
    def send(self, message) -> None:
        """Queue a one-way message; it leaves with the next batch."""
        if self.closed:
            return
        self._outbox.append(message)
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send_many(self, messages) -> None:
        """Queue messages and write them now if the link is idle: for callers that have
        already gathered a whole batch."""
        if self.closed:
            return
        self._outbox.extend(messages)
        if not self._writing:
            self._flush()

    def flush(self) -> None:
        """Write what is queued now, unless a write is in flight (it follows that one)."""
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._outbox or self._writing:
            return
        batch, self._outbox = self._outbox, []
        try:
            encoded = protocol.encode_batches(batch, self.limits)
        except Exception:
            logger.exception("could not encode a batch for %s; closing", self.peer)
            self.abort()
            return
        self._writing = True
        future = None
        try:
            small: list = []
            for buffers in encoded:
                for buf in buffers:
                    if len(buf) < _SMALL_FRAME:
                        small.append(buf)
                        continue
                    if small:
                        self.stream.write(b"".join(small))
                        small = []
                    future = self.stream.write(buf)
            if small:
                future = self.stream.write(b"".join(small) if len(small) > 1 else small[0])
        except Exception as exc:
            self._writing = False
            if not isinstance(exc, StreamClosedError):
                logger.exception("could not write to %s; closing", self.peer)
            self.abort()
            return
        self._write_future = future
        future.add_done_callback(self._write_done)

    def _write_done(self, future) -> None:
        self._writing = False
        if future.exception() is not None:
            self.abort()
            return
        if self._outbox:
            self._flush()

    async def request(self, message, timeout: float | None = None) -> Any:
        """Send ``message`` and wait for the peer's reply value (or its error)."""
        if self.closed:
            raise ConnectionLostError(f"connection to {self.peer} is closed")
        rid = next(self._rids)
        future = self._loop.create_future()
        self._pending[rid] = future
        self.send(Request(rid, message))
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(rid, None)

    # -- receiving ----------------------------------------------------------------------
    async def _read_batches(self):
        """Yield decoded batches. One partial read serves every batch it completes; a
        large frame is read with ``read_into`` straight into its own buffer."""
        stream = self.stream
        limits = self.limits
        buf = bytearray()
        count_size, length_size = protocol.COUNT_SIZE, protocol.LENGTH_SIZE
        while True:
            while True:  # parse every complete batch already buffered
                if len(buf) < count_size:
                    break
                count = protocol.parse_count(bytes(buf[:count_size]), limits)
                prefix = count_size + length_size * count
                if len(buf) < prefix:
                    break
                lengths = protocol.parse_lengths(bytes(buf[count_size:prefix]), count,
                                                 limits)
                total = prefix + sum(lengths)
                if len(buf) >= total or max(lengths) < _SMALL_FRAME:
                    if len(buf) < total:
                        break
                    frames = []
                    offset = prefix
                    for n in lengths:
                        frames.append(bytes(buf[offset:offset + n]))
                        offset += n
                    del buf[:total]
                else:
                    frames = []
                    offset = prefix
                    for n in lengths:
                        if n < _SMALL_FRAME:
                            need = offset + n
                            while len(buf) < need:
                                buf += await stream.read_bytes(need - len(buf))
                            frames.append(bytes(buf[offset:need]))
                        else:
                            frame = bytearray(n)
                            have = min(n, len(buf) - offset)
                            if have > 0:
                                frame[:have] = buf[offset:offset + have]
                            if have < n:
                                await stream.read_into(memoryview(frame)[have:])
                            del buf[offset:offset + have]
                            frames.append(memoryview(frame).toreadonly())
                            continue
                        offset += n
                    del buf[:offset]
                yield protocol.decode_header(frames[0], frames[1:])
            buf += await stream.read_bytes(_READ_CHUNK, partial=True)

    async def read_loop(self) -> None:
        """Read and dispatch messages until the connection closes."""
        try:
            async for messages in self._read_batches():
                for message in messages:
                    self._dispatch(message)
        except ValueError as exc:
            logger.warning("malformed message from %s: %s; closing that connection",
                           self.peer, exc)
        except StreamClosedError:
            pass
        except Exception:
            logger.exception("error while reading from %s; closing that connection",
                             self.peer)
        finally:
            self.abort()

    def _dispatch(self, message) -> None:
        cls = type(message)
        if cls is Reply:
            future = self._pending.get(message.rid)
            if future is not None and not future.done():
                if message.error is not None:
                    future.set_exception(RemoteCallError(message.error))
                else:
                    future.set_result(message.value)
            return
        if cls is Request:
            self._serve_request(message)
            return
        try:
            self.handler(self, message)
        except Exception:
            logger.exception("handler failed on %s from %s", cls.__name__, self.peer)

    def _serve_request(self, request: Request) -> None:
        try:
            result = self.handler(self, request.message)
        except Exception as exc:
            logger.debug("request %s from %s failed", type(request.message).__name__,
                         self.peer, exc_info=True)
            self.send(Reply(request.rid, f"{type(exc).__name__}: {exc}", None))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(lambda t, rid=request.rid: self._reply_done(rid, t))
        else:
            self.send(Reply(request.rid, None, result))

    def _reply_done(self, rid: int, task: asyncio.Future) -> None:
        if task.cancelled():
            self.send(Reply(rid, "cancelled", None))
        elif task.exception() is not None:
            exc = task.exception()
            self.send(Reply(rid, f"{type(exc).__name__}: {exc}", None))
        else:
            self.send(Reply(rid, None, task.result()))

    # -- closing ------------------------------------------------------------------------
    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLostError(f"connection to {self.peer} lost"))
        self._pending.clear()
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                logger.exception("close callback failed for %s", self.peer)

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (waiting up to ``timeout`` for the peer to take it), then
        close."""
        deadline = self._loop.time() + timeout
        while not self.closed and (self._outbox or self._writing):
            if not self._writing:
                self._flush()
            future = self._write_future
            remaining = deadline - self._loop.time()
            if future is None or remaining <= 0:
                break
            try:
                await asyncio.wait_for(asyncio.shield(future), remaining)
            except Exception:
                break
            await asyncio.sleep(0)
        self.abort()


class RemoteCallError(Exception):
    """The peer failed to serve a request; the message is its error text."""


# -- handshake --------------------------------------------------------------------------

async def _server_handshake(stream: IOStream, token: bytes, timeout: float) -> None:
    nonce = os.urandom(16)
    await stream.write(_HELLO.pack(_MAGIC, PROTOCOL_VERSION, nonce))
    answer = await asyncio.wait_for(stream.read_bytes(_ANSWER.size), timeout)
    magic, version, client_nonce, proof = _ANSWER.unpack(answer)
    if magic != _MAGIC:
        raise ProtocolError("not a graphstore peer (bad magic bytes)")
    if version != PROTOCOL_VERSION:
        await stream.write(_VERDICT.pack(1, b"protocol version".ljust(32)))
        raise ProtocolError(f"protocol version {version} (this server speaks "
                            f"{PROTOCOL_VERSION})")
    if not hmac.compare_digest(proof, _proof(token, b"client", nonce, client_nonce)):
        await stream.write(_VERDICT.pack(2, b"cluster token".ljust(32)))
        raise AuthenticationError("wrong cluster token")
    await stream.write(_VERDICT.pack(0, _proof(token, b"server", client_nonce, nonce)))


async def _client_handshake(stream: IOStream, token: bytes, timeout: float,
                            address: str) -> None:
    hello = await asyncio.wait_for(stream.read_bytes(_HELLO.size), timeout)
    magic, version, nonce = _HELLO.unpack(hello)
    if magic != _MAGIC:
        raise ProtocolError(f"{address} is not a graphstore server")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"{address} speaks protocol version {version}; this client "
                            f"speaks {PROTOCOL_VERSION}: install matching versions")
    client_nonce = os.urandom(16)
    await stream.write(_ANSWER.pack(_MAGIC, PROTOCOL_VERSION, client_nonce,
                                    _proof(token, b"client", nonce, client_nonce)))
    status, proof = _VERDICT.unpack(
        await asyncio.wait_for(stream.read_bytes(_VERDICT.size), timeout))
    if status == 2:
        raise AuthenticationError(
            f"{address} rejected this process's cluster token: set GRAPHSTORE_TOKEN (or "
            f"the token file) to the token the scheduler was started with")
    if status != 0:
        raise ProtocolError(f"{address} refused the connection: "
                            f"{proof.rstrip().decode(errors='replace')}")
    if not hmac.compare_digest(proof, _proof(token, b"server", client_nonce, nonce)):
        raise AuthenticationError(f"{address} does not know the cluster token")


async def connect(address: str, token: bytes, *, limits: Limits | None = None,
                  split_bytes: int = 64 * 1024, timeout: float = 10.0) -> Comm:
    """Open an authenticated ``Comm`` to ``tcp://host:port``."""
    host, port = parse_address(address)
    try:
        stream = await asyncio.wait_for(
            TCPClient().connect(host, port, max_buffer_size=(limits or Limits()).max_header_bytes + 1024),
            timeout)
    except (OSError, StreamClosedError, asyncio.TimeoutError) as exc:
        raise ConnectionLostError(f"could not connect to {address}: {exc}") from None
    _tune(stream)
    try:
        await _client_handshake(stream, token, timeout, address)
    except (StreamClosedError, asyncio.TimeoutError, struct.error) as exc:
        stream.close()
        raise ConnectionLostError(f"handshake with {address} failed: "
                                  f"{type(exc).__name__} {exc}") from None
    except Exception:
        stream.close()
        raise
    return Comm(stream, address, limits or Limits(), split_bytes)


class CommServer(TCPServer):
    """Accepts connections, runs the handshake, then hands each ``Comm`` to ``on_comm``."""

    def __init__(self, token: bytes, on_comm: Callable[[Comm], Any], *,
                 limits: Limits | None = None, split_bytes: int = 64 * 1024,
                 handshake_timeout: float = 10.0):
        super().__init__(max_buffer_size=(limits or Limits()).max_header_bytes + 1024)
        self.token = token
        self.on_comm = on_comm
        self.limits = limits or Limits()
        self.split_bytes = split_bytes
        self.handshake_timeout = handshake_timeout

    async def handle_stream(self, stream: IOStream, address) -> None:
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        _tune(stream)
        try:
            await _server_handshake(stream, self.token, self.handshake_timeout)
        except (AuthenticationError, ProtocolError) as exc:
            logger.warning("refused connection from %s: %s", peer, exc)
            stream.close()
            return
        except (StreamClosedError, asyncio.TimeoutError, struct.error) as exc:
            logger.info("connection from %s closed during handshake (%s)", peer,
                        type(exc).__name__)
            stream.close()
            return
        comm = Comm(stream, peer, self.limits, self.split_bytes)
        self.on_comm(comm)
