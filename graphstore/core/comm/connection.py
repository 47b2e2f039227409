"""``Comm``: one authenticated, batched, message-oriented connection on a Tornado ``IOStream``.

It batches small messages (a batch is sent on the next loop iteration when the link is
idle, and grows while a write is in flight), reads large frames into preallocated memory
with ``read_into``, and matches ``Reply`` messages to requests. Connections are opened by
``client.connect`` and accepted by ``server.CommServer``; both run the token handshake
(``handshake.py``) first, so by the time a ``Comm`` exists its peer has proved it knows the
cluster token.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import select
import threading
import inspect
from typing import Any, Callable

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from graphstore.core import protocol
from graphstore.core.comm.errors import error_record, remote_error
from graphstore.core.comm.frames import frame_memory, frames_in
from graphstore.core.config import Limits
from graphstore.core.protocol import ErrorRecord, Reply, Request
from graphstore.exceptions import ConnectionLostError, ProtocolError

logger = logging.getLogger("graphstore.comm")
#: A batch of this many messages or more is handled in slices, with a turn of the event
#: loop between them: a flood on one connection (a million task submissions) must not
#: keep a process from its heartbeats and its other peers for seconds.
_YIELD_EVERY = 1000

#: Frames smaller than this are read together in one call and sliced.
_SMALL_FRAME = 64 * 1024
#: How much one partial read asks for.
_READ_CHUNK = 256 * 1024


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

    def send_now(self, messages) -> None:
        """Queue messages and hand all that is queued to the socket now, even while a
        write is in flight (the stream keeps the order): for a message that must be on
        its way before this thread goes on, with no loop iteration in between (an
        actor's call telling its caller it runs again). Loop thread only."""
        if self.closed:
            return
        self._outbox.extend(messages)
        self._flush(even_while_writing=True)

    def _flush(self, even_while_writing: bool = False) -> None:
        self._flush_scheduled = False
        if self.closed or not self._outbox or (self._writing and not even_while_writing):
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
            for frame in frames_in(message.value):
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
                        frame = frame_memory(n)
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
                for i, message in enumerate(messages):
                    if self.closed:      # a handler closed it: the rest is not read
                        return
                    if i and not i % _YIELD_EVERY:
                        await asyncio.sleep(0)   # let heartbeats and other peers in
                    self._dispatch(message)
        except ValueError as exc:
            logger.warning("refused a message from %s (%s); closing that connection",
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
                    future.set_exception(remote_error(message.error))
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
            self.send(Reply(request.rid, error_record(exc), None))
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
            self.send(Reply(rid, ErrorRecord("CancelledError", "cancelled"), None))
        elif task.exception() is not None:
            self.send(Reply(rid, error_record(task.exception()), None))
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



class ReplyThenRun:
    """A handler's reply value plus a callback to run once the reply has been written
    (e.g. to unpin the memory a reply frame points into)."""
    __slots__ = ("value", "callback")

    def __init__(self, value, callback):
        self.value = value
        self.callback = callback

