"""TCP connections between graphstore processes, on Tornado ``IOStream``.

A ``Comm`` is one authenticated connection. It batches small messages (a batch is sent on
the next loop iteration when the link is idle, and grows while a write is in flight), reads
large frames into preallocated memory with ``read_into``, and matches ``Reply`` messages to
requests. Every connection starts with an HMAC challenge-response over the cluster token, so
nothing is unpickled, or even msgpack-decoded, before the peer has proved it knows the token;
the token never crosses the wire. With a ``TLSConfig`` (``tls.py``), connections are mutual
TLS first and the token handshake runs inside it.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import mmap
import os
import select
import socket
import ssl
import struct
import threading
import inspect
from typing import Any, Callable

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from graphstore import protocol
from graphstore.config import PROTOCOL_VERSION, Limits
from graphstore.exceptions import (AuthenticationError, ConnectionLostError, ProtocolError,
                                   TLSError)
from graphstore.protocol import Reply, Request
from graphstore.tls import TLSConfig, explain_handshake_failure, not_tls_message

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


def _tune(stream: IOStream) -> None:
    sock = stream.socket
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
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
        #: Callbacks to run once the messages now in the outbox are written.
        self._after_write: list = []
        #: request id -> writable buffers the reply's large frames are read into
        self._sinks: dict[int, list[memoryview]] = {}
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._loop = asyncio.get_event_loop()
        self._thread_writes = threading.Lock()
        #: Loop time of the last bytes read: how the scheduler and workers tell a silent
        #: peer (a cut network leaves the connection open) from a busy one.
        self.last_received = self._loop.time()
        #: TLS: one OpenSSL connection object, which only the loop thread may touch.
        self.encrypted = isinstance(stream, SSLIOStream)

    # -- sending ------------------------------------------------------------------------
    def write_from_thread(self, messages: list) -> None:
        """Encode ``messages`` and write them now, from any thread, straight to the
        socket: no hop to the event loop. Only for a connection whose writes all go
        through here (Tornado then only reads it; the two directions are independent).
        Concurrent writers are serialized; a full socket buffer waits for room.

        A TLS connection cannot be written that way (its OpenSSL object is shared by
        both directions and is not thread-safe): the messages go to the loop instead,
        in call order, and leave with its next write."""
        if self.closed:
            raise ConnectionLostError(f"connection to {self.peer} is closed")
        if self.encrypted:
            self._loop.call_soon_threadsafe(self.send_many, list(messages))
            return
        data = [b for buffers in protocol.encode_batches(messages, self.limits)
                for b in buffers]
        with self._thread_writes:
            sock = self.stream.socket
            if sock is None:
                raise ConnectionLostError(f"connection to {self.peer} is closed")
            for buf in ([b"".join(data)] if len(data) > 1 and
                        sum(len(b) for b in data) < _SMALL_FRAME else data):
                view = memoryview(buf).cast("B")
                while view:
                    try:
                        sent = sock.send(view)
                    except BlockingIOError:
                        select.select([], [sock], [], 1.0)
                        continue
                    except OSError as exc:
                        raise ConnectionLostError(f"connection to {self.peer} lost: "
                                                  f"{exc}") from None
                    view = view[sent:]

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
        callbacks, self._after_write = self._after_write, []
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
        for callback in callbacks:
            future.add_done_callback(lambda f, cb=callback: cb())

    def _write_done(self, future) -> None:
        self._writing = False
        if future.exception() is not None:
            self.abort()
            return
        if self._outbox:
            self._flush()

    async def request(self, message, timeout: float | None = None, *,
                      sinks: list | None = None) -> Any:
        """Send ``message`` and wait for the peer's reply value (or its error).

        ``sinks``: writable buffers that large frames of the reply of matching size are
        read into, instead of fresh memory (used to land objects in shared memory).
        """
        if self.closed:
            raise ConnectionLostError(f"connection to {self.peer} is closed")
        rid = next(self._rids)
        future = self._loop.create_future()
        self._pending[rid] = future
        if sinks:
            self._sinks[rid] = [memoryview(s).cast("B") for s in sinks]
        self.send(Request(rid, message))
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(rid, None)
            self._sinks.pop(rid, None)

    def _sinks_for(self, messages: list, placeholders: dict, lengths: list) -> dict:
        """Frame index -> sink buffer, for frames referenced by replies that have sinks.

        A request's sinks only take frames its own reply refers to, in order, when the
        sizes match.
        """
        if not self._sinks:
            return {}
        index_of = {id(frame): index for index, frame in placeholders.items()}
        assigned: dict[int, memoryview] = {}
        for message in messages:
            if type(message) is not Reply or message.rid not in self._sinks:
                continue
            sinks = list(self._sinks[message.rid])
            for frame in _frames_in(message.value):
                index = index_of.get(id(frame))
                if index is None or not sinks:
                    continue
                if sinks[0].nbytes == lengths[index + 1]:
                    assigned[index] = sinks.pop(0)
        return assigned

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
                    yield protocol.decode_header(frames[0], frames[1:])
                    continue
                # A large frame follows: decode the header first, so a reply can name
                # where its frames go (a sink), then read each large frame into place.
                header_end = prefix + lengths[0]
                while len(buf) < header_end:
                    buf += await stream.read_bytes(header_end - len(buf))
                messages, placeholders = protocol.decode_header_deferred(
                    bytes(buf[prefix:header_end]), count - 1)
                del buf[:header_end]
                sinks = self._sinks_for(messages, placeholders, lengths)
                frames = []
                for index, n in enumerate(lengths[1:]):
                    if n < _SMALL_FRAME:
                        while len(buf) < n:
                            buf += await stream.read_bytes(n - len(buf))
                        frames.append(bytes(buf[:n]))
                        del buf[:n]
                        continue
                    frame = sinks.get(index)
                    if frame is None:
                        frame = _frame_memory(n)
                    have = min(n, len(buf))
                    if have:
                        frame[:have] = buf[:have]
                        del buf[:have]
                    if have < n:
                        await stream.read_into(frame[have:])
                    frames.append(frame.toreadonly())
                for index, placeholder in placeholders.items():
                    placeholder.buffer = frames[index]
                yield messages
            buf += await stream.read_bytes(_READ_CHUNK, partial=True)
            self.last_received = self._loop.time()

    async def read_loop(self) -> None:
        """Read and dispatch messages until the connection closes."""
        try:
            async for messages in self._read_batches():
                for message in messages:
                    if self.closed:      # a handler closed it: the rest is not read
                        return
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
        except ProtocolError as exc:
            logger.warning("%s from %s: %s; closing that connection", cls.__name__,
                           self.peer, exc)
            self.abort()
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
        elif type(result) is ReplyThenRun:
            if self.closed:
                result.callback()
                return
            self.send(Reply(request.rid, None, result.value))
            self._after_write.append(result.callback)
            self.flush()
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
        callbacks, self._after_write = self._after_write, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("after-write callback failed for %s", self.peer)
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


#: Frames at least this large are read into their own anonymous mapping.
_MAPPED_FRAME = 8 * 1024 * 1024


def _frame_memory(n: int) -> memoryview:
    """Memory for a large frame about to be read. Anonymous mmap pages are committed as
    the bytes land (``bytearray(n)`` zero-fills, committing all ``n`` at once), so a
    peer that announces a frame up to ``max_frame_bytes`` and sends nothing costs this
    process address space, not memory. Smaller frames stay on the heap: each mapping
    is one of a process's limited memory areas (``vm.max_map_count``), and a scheduler
    may keep tens of thousands of inline payloads."""
    if n < _MAPPED_FRAME:
        return memoryview(bytearray(n))
    return memoryview(mmap.mmap(-1, n))


def _frames_in(value, depth: int = 0):
    """The ``Frame`` placeholders inside a decoded value (lists and dicts, shallow)."""
    if type(value) is protocol.Frame:
        yield value
    elif depth < 4 and isinstance(value, list):
        for item in value:
            yield from _frames_in(item, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            yield from _frames_in(item, depth + 1)


class ReplyThenRun:
    """A handler's reply value plus a callback to run once the reply has been written
    (e.g. to unpin the memory a reply frame points into)."""
    __slots__ = ("value", "callback")

    def __init__(self, value, callback):
        self.value = value
        self.callback = callback


class RemoteCallError(Exception):
    """The peer failed to serve a request; the message is its error text."""


# -- handshake --------------------------------------------------------------------------

async def _server_handshake(stream: IOStream, token: bytes, timeout: float) -> None:
    nonce = os.urandom(16)
    await stream.write(_HELLO.pack(_MAGIC, PROTOCOL_VERSION, nonce))
    answer = await asyncio.wait_for(stream.read_bytes(_ANSWER.size), timeout)
    magic, version, client_nonce, proof = _ANSWER.unpack(answer)
    if magic != _MAGIC:
        if answer[0] == 0x16 and answer[1] == 0x03:    # a TLS handshake record
            raise ProtocolError("a TLS client connected, but this server runs without TLS "
                                "(start it with --tls-cert/--tls-key/--tls-ca)")
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
    hint = ("check the server's log" if isinstance(stream, SSLIOStream) else
            "if the cluster uses TLS, give this process its certificate too (tls_cert, "
            "tls_key, tls_ca); otherwise check that the address is a graphstore server")
    try:
        hello = await asyncio.wait_for(stream.read_bytes(_HELLO.size), timeout)
    except asyncio.TimeoutError:
        raise ConnectionLostError(f"{address} sent no graphstore greeting within "
                                  f"{timeout:g} s: {hint}") from None
    except StreamClosedError as exc:
        if isinstance(exc.real_error, ssl.SSLError):
            raise exc.real_error from None
        raise ConnectionLostError(f"{address} closed the connection before its graphstore "
                                  f"greeting: {hint}") from None
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


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed read, write or connect, if that is what it was."""
    if isinstance(exc, ssl.SSLError):
        return exc
    if isinstance(exc, StreamClosedError) and isinstance(exc.real_error, ssl.SSLError):
        return exc.real_error
    return None


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
        stream = await _start_tls(stream, host, address, tls, timeout)
    _tune(stream)
    try:
        await _client_handshake(stream, token, timeout, address)
    except (OSError, StreamClosedError, asyncio.TimeoutError, struct.error) as exc:
        stream.close()
        failure = _tls_failure(exc)
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
_TLS_RECORD_HINT = b"\x16\x03\x01" + b"\x00" * (_ANSWER.size - 3)


async def _start_tls(stream: IOStream, host: str, address: str, tls: TLSConfig,
                     timeout: float) -> SSLIOStream:
    """The client side of the TLS handshake on a connected stream."""
    try:
        return await asyncio.wait_for(
            stream.start_tls(False, ssl_options=tls.client_context, server_hostname=host),
            timeout)
    except (OSError, StreamClosedError, asyncio.TimeoutError) as exc:   # SSLError too
        failure = _tls_failure(exc)
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
            await stream.write(_TLS_RECORD_HINT)
        except StreamClosedError:
            pass
        stream.close()
        raise TLSError(not_tls_message(address, "it greeted in plain text")) from None


def _server_tls_failure(exc: BaseException) -> str:
    """A server's log line for a client whose TLS handshake failed."""
    detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
    if str(detail) == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        detail = "the client presented no certificate"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"the client's certificate failed verification: {detail}"
    return f"TLS handshake failed: {str(detail).lower().replace('_', ' ')}"


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

    async def _handshake(self, stream: IOStream) -> None:
        if isinstance(stream, SSLIOStream):
            if stream.closed():        # the TLS handshake failed before this ran
                failure = _tls_failure(stream.error) if stream.error else None
                raise TLSError(_server_tls_failure(failure) if failure else
                               "closed during the TLS handshake")
            try:
                await stream.wait_for_handshake()
            except (OSError, StreamClosedError) as exc:
                failure = _tls_failure(exc)
                if failure is None:
                    raise
                raise TLSError(_server_tls_failure(failure)) from None
        await _server_handshake(stream, self.token, self.handshake_timeout)

    async def handle_stream(self, stream: IOStream, address) -> None:
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        _tune(stream)
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
