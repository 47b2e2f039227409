"""graphstore.core.comm over real TCP on 127.0.0.1, inside this process.

Every test runs its own asyncio loop (``asyncio.run``); servers bind port 0.
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import socket
import struct
import tracemalloc

import msgpack
import numpy as np
import pytest
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from graphstore.core import comm as comm_module
from graphstore.core.comm import handshake
from graphstore.core import protocol as p
from graphstore.core.comm import CommServer, RemoteCallError, connect, parse_address
from graphstore.core.config import Limits
from graphstore.exceptions import (AuthenticationError, ConnectionLostError, ObjectStoreFullError,
                                   ProtocolError)
from graphstore.core.protocol import Frame

TOKEN = b"unit-test-token-" * 4
ID = b"i" * 16


def run(coro, timeout: float = 15.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


class Served:
    """A CommServer on 127.0.0.1 that records what its comms receive."""

    def __init__(self, handler=None, **kwargs):
        self.received: list = []
        self.comms: list = []
        self.closed: list = []
        self.handler = handler or self._default_handler
        self.server = CommServer(TOKEN, self._on_comm, **kwargs)
        sockets = bind_sockets(0, "127.0.0.1")
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.arrived = asyncio.Event()

    def _default_handler(self, comm, message):
        if type(message) is p.Ping:
            return "pong"
        if type(message) is p.GetStatus:
            return {"received": len(self.received)}
        self.received.append(message)
        self.arrived.set()
        return None

    def _on_comm(self, comm):
        comm.handler = self.handler
        comm.on_close.append(self.closed.append)
        self.comms.append(comm)
        asyncio.ensure_future(comm.read_loop())

    async def wait_for(self, n: int, timeout: float = 10.0):
        async def loop():
            while len(self.received) < n:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(loop(), timeout)

    def stop(self):
        self.server.stop()
        for c in self.comms:
            c.abort()


async def client(address, **kwargs):
    c = await connect(address, TOKEN, **kwargs)
    c.handler = lambda comm, m: None
    asyncio.ensure_future(c.read_loop())
    return c


async def wait_closed(stream, timeout=5.0):
    """Read until the peer closes ``stream``; return what arrived."""
    data = b""

    async def drain():
        nonlocal data
        try:
            while True:
                data += await stream.read_bytes(65536, partial=True)
        except StreamClosedError:
            pass
    await asyncio.wait_for(drain(), timeout)
    return data


async def raw_connect(port):
    return await TCPClient().connect("127.0.0.1", port)


def local_peer(c) -> str:
    host, port = c.stream.socket.getsockname()[:2]
    return f"{host}:{port}"


# -- addresses ----------------------------------------------------------------------------

def test_parse_address():
    assert parse_address("tcp://127.0.0.1:8786") == ("127.0.0.1", 8786)
    assert parse_address("localhost:1") == ("localhost", 1)
    assert parse_address("tcp://[::1]:99") == ("::1", 99)
    for bad in ("tcp://host", "host:", ":80", "tcp://h:port"):
        with pytest.raises(ValueError, match="tcp://HOST:PORT"):
            parse_address(bad)


def test_connect_to_nothing_is_connection_lost():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main():
        with pytest.raises(ConnectionLostError, match="could not connect"):
            await connect(f"tcp://127.0.0.1:{port}", TOKEN, timeout=2)
    run(main())


# -- request / reply ----------------------------------------------------------------------

def test_request_reply():
    async def main():
        s = Served()
        c = await client(s.address)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        results = await asyncio.gather(*[c.request(p.Ping()) for _ in range(100)])
        assert results == ["pong"] * 100
        await c.close()
        s.stop()
    run(main())


class NotOnTheAllowList(Exception):
    pass


def test_request_errors_and_async_handlers():
    async def handler(comm, m):
        await asyncio.sleep(0.01)
        if m.ids == [b"bad".ljust(16, b".")]:
            raise KeyError("nothing here")
        if m.ids == [b"full".ljust(16, b".")]:
            raise ObjectStoreFullError("no room for 5 bytes")
        if m.ids == [b"odd".ljust(16, b".")]:
            raise NotOnTheAllowList("its own kind")
        return [len(m.ids), m.ids[0]]

    def dispatch(comm, m):
        if type(m) is p.Ping:
            raise RuntimeError("ping refused")
        return handler(comm, m)

    async def main():
        s = Served(handler=dispatch)
        c = await client(s.address)
        # Errors come back as records mapped to their class: no text to parse.
        with pytest.raises(RuntimeError, match="^ping refused$") as error:
            await c.request(p.Ping(), timeout=5)
        assert isinstance(error.value, RemoteCallError)
        assert error.value.type_name == "RuntimeError"
        assert "in dispatch" in error.value.remote_traceback
        assert await c.request(p.IncRef([b"x".ljust(16, b"."), b"y".ljust(16, b".")]), timeout=5) == [2, b"x".ljust(16, b".")]
        with pytest.raises(KeyError, match="nothing here") as error:
            await c.request(p.IncRef([b"bad".ljust(16, b".")]), timeout=5)
        assert "in handler" in error.value.remote_traceback
        with pytest.raises(ObjectStoreFullError, match="^no room for 5 bytes$"):
            await c.request(p.IncRef([b"full".ljust(16, b".")]), timeout=5)
        with pytest.raises(RemoteCallError) as error:       # not on the allow-list
            await c.request(p.IncRef([b"odd".ljust(16, b".")]), timeout=5)
        assert type(error.value) is RemoteCallError
        assert error.value.type_name == "NotOnTheAllowList"
        assert str(error.value) == "NotOnTheAllowList: its own kind"
        # The connection survives handler errors.
        assert await c.request(p.IncRef([b"z".ljust(16, b".")]), timeout=5) == [1, b"z".ljust(16, b".")]
        await c.close()
        s.stop()
    run(main())


def test_requests_both_ways():
    async def main():
        s = Served()
        c = await client(s.address)
        c.handler = lambda comm, m: "from client" if type(m) is p.Ping else None
        await c.request(p.Ping(), timeout=5)           # the server has its comm now
        assert await s.comms[0].request(p.Ping(), timeout=5) == "from client"
        await c.close()
        s.stop()
    run(main())


def test_one_way_handler_error_keeps_connection(caplog):
    def handler(comm, m):
        if type(m) is p.DecRef:
            raise ValueError("handler bug")
        return "pong" if type(m) is p.Ping else None

    async def main():
        s = Served(handler=handler)
        c = await client(s.address)
        c.send(p.DecRef([ID]))
        assert await c.request(p.Ping(), timeout=5) == "pong"
        assert not c.closed
        await c.close()
        s.stop()
    with caplog.at_level(logging.ERROR, logger="graphstore.comm"):
        run(main())
    assert any("handler failed on DecRef" in r.getMessage() for r in caplog.records)


def test_pending_request_fails_when_the_connection_drops():
    async def slow(comm, m):
        await asyncio.sleep(30)

    async def main():
        s = Served(handler=lambda comm, m: slow(comm, m))
        c = await client(s.address)
        task = asyncio.ensure_future(c.request(p.Ping()))
        while not s.comms:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        s.comms[0].abort()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(task, 5)
        with pytest.raises(ConnectionLostError):
            await c.request(p.Ping())
        c.send(p.Ping())                                  # a no-op once closed
        s.stop()
    run(main())


def test_close_flushes_queued_messages():
    async def main():
        s = Served()
        c = await client(s.address)
        for i in range(500):
            c.send(p.IncRef([i.to_bytes(16, "big")]))
        await c.close()
        await s.wait_for(500)
        assert [m.ids[0] for m in s.received] == [i.to_bytes(16, "big") for i in range(500)]
        s.stop()
    run(main())


# -- batching -------------------------------------------------------------------------

class WireTap(TCPServer):
    """A server that does the handshake, then records the raw bytes it receives."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()
        self.go = asyncio.Event()
        self.done = asyncio.Event()
        sockets = bind_sockets(0, "127.0.0.1")
        self.add_sockets(sockets)
        self.address = f"tcp://127.0.0.1:{sockets[0].getsockname()[1]}"

    async def handle_stream(self, stream, address):
        await handshake.server_handshake(stream, TOKEN, 5)
        await self.go.wait()
        try:
            while True:
                self.data += await stream.read_bytes(1 << 20, partial=True)
        except StreamClosedError:
            pass
        self.done.set()

    def batches(self) -> list[list]:
        out, pos = [], 0
        data = bytes(self.data)
        limits = Limits()
        while pos < len(data):
            count = p.parse_count(data[pos:pos + 4], limits)
            pos += 4
            lengths = p.parse_lengths(data[pos:pos + 8 * count], count, limits)
            pos += 8 * count
            frames = []
            for n in lengths:
                frames.append(data[pos:pos + n])
                pos += n
            out.append(p.decode_header(frames[0], frames[1:]))
        assert pos == len(data)
        return out


def test_sends_in_one_loop_iteration_leave_as_one_batch():
    async def main():
        tap = WireTap()
        tap.go.set()
        c = await connect(tap.address, TOKEN)
        ids = [i.to_bytes(16, "big") for i in range(2000)]
        for object_id in ids[:1000]:
            c.send(p.IncRef([object_id]))
        c.send_many([p.DecRef([object_id]) for object_id in ids[1000:]])
        await c.close()
        await asyncio.wait_for(tap.done.wait(), 5)
        batches = tap.batches()
        assert len(batches) == 1
        (batch,) = batches
        assert [m.ids[0] for m in batch] == ids
        assert [type(m) for m in batch] == [p.IncRef] * 1000 + [p.DecRef] * 1000
        tap.stop()
    run(main())


def test_batch_grows_while_a_write_is_in_flight():
    async def main():
        tap = WireTap()                                    # not reading yet
        c = await connect(tap.address, TOKEN)
        big = np.arange(32 * 1024 * 1024, dtype=np.uint8)  # more than the socket buffers
        c.send(p.PutObject(ID, [Frame(memoryview(big))], [], None))
        await asyncio.sleep(0.05)
        assert c._writing, "the big write should still be in flight"
        for i in range(300):                               # spread over many iterations
            c.send(p.IncRef([i.to_bytes(16, "big")]))
            await asyncio.sleep(0)
        tap.go.set()
        await c.close()
        await asyncio.wait_for(tap.done.wait(), 10)
        batches = tap.batches()
        assert [len(b) for b in batches] == [1, 300]
        assert bytes(batches[0][0].payload[0].buffer) == big.tobytes()
        assert [m.ids[0] for m in batches[1]] == [i.to_bytes(16, "big") for i in range(300)]
        tap.stop()
    run(main(), timeout=30)


def test_close_waits_for_a_slow_write():
    async def main():
        tap = WireTap()                                    # not reading yet
        c = await connect(tap.address, TOKEN)
        big = np.ones(32 * 1024 * 1024, dtype=np.uint8)
        c.send(p.PutObject(ID, [Frame(memoryview(big))], [], None))
        c.send(p.IncRef([ID]))
        asyncio.get_running_loop().call_later(1.5, tap.go.set)
        await c.close()
        await asyncio.wait_for(tap.done.wait(), 10)
        batches = tap.batches()
        assert [type(m) for b in batches for m in b] == [p.PutObject, p.IncRef]
        tap.stop()
    run(main(), timeout=30)


def test_batches_respect_the_receivers_header_limit():
    limits = Limits(max_header_bytes=256 * 1024)

    async def main():
        s = Served(limits=limits)
        c = await client(s.address, limits=limits)
        for i in range(40):                                 # 40 x 20 KB = 800 KB
            c.send(p.FunctionCode(i.to_bytes(16, "big"), b"x" * 20_000))
        await s.wait_for(40, timeout=1.5)
        assert not c.closed
        await c.close()
        s.stop()
    run(main())


# -- large frames and fragmented input ------------------------------------------------

def test_50mb_frame_roundtrip_is_read_into_preallocated_memory():
    async def main():
        s = Served()
        c = await client(s.address)
        data = np.random.default_rng(0).integers(0, 256, 50 * 1024 * 1024, dtype=np.uint8)
        # A byte view of the array, as serialization.dumps hands out (pickle buffer .raw()).
        c.send(p.PutObject(ID, [b"head", Frame(memoryview(data))], [ID], None))
        await s.wait_for(1)
        (m,) = s.received
        assert m.payload[0] == b"head" and m.contained == [ID]
        frame = m.payload[1]
        assert type(frame) is Frame and len(frame) == data.nbytes
        view = frame.buffer
        assert isinstance(view, memoryview) and view.readonly
        assert isinstance(view.obj, mmap.mmap)             # the memory read_into filled
        assert np.array_equal(np.frombuffer(view, dtype=np.uint8), data)
        # And back the other way, echoed by the server.
        s.comms[0].send(p.ObjectReady(ID, [Frame(view)], None, None))
        got = asyncio.get_running_loop().create_future()
        c.handler = lambda comm, msg: got.set_result(msg)
        echoed = await asyncio.wait_for(got, 10)
        assert np.array_equal(np.frombuffer(echoed.payload[0].buffer, dtype=np.uint8), data)
        await c.close()
        s.stop()
    run(main(), timeout=60)


def test_frame_wrapping_a_numpy_array():
    async def main():
        s = Served()
        c = await client(s.address)
        data = np.arange(200_000, dtype=np.uint8)
        c.send(p.PutObject(ID, [Frame(data)], [], None))
        c.send(p.IncRef([ID]))
        await s.wait_for(2, timeout=1.5)
        assert np.array_equal(np.frombuffer(s.received[0].payload[0].buffer, np.uint8), data)
        await c.close()
        s.stop()
    run(main())


def test_frame_of_a_multibyte_memoryview():
    async def main():
        s = Served()
        c = await client(s.address)
        data = np.arange(200_000, dtype=np.float64).reshape(400, 500)
        c.send(p.PutObject(ID, [Frame(memoryview(data))], [], None))
        c.send(p.IncRef([ID]))
        await s.wait_for(2, timeout=5)
        frame = s.received[0].payload[0]
        assert len(frame) == data.nbytes
        back = np.frombuffer(frame.buffer, dtype=np.float64).reshape(400, 500)
        assert np.array_equal(back, data)
        assert s.received[1] == p.IncRef([ID])
        await c.close()
        s.stop()
    run(main())


def test_many_small_frames_within_limits():
    limits = Limits(max_header_bytes=512 * 1024)

    async def main():
        s = Served(limits=limits)
        c = await client(s.address, limits=limits)
        frames = [Frame(bytes([i]) * 60_000) for i in range(20)]   # 1.2 MB of small frames
        c.send(p.PutObject(ID, frames, [], None))
        await s.wait_for(1, timeout=3)
        assert [bytes(f.buffer)[:1] for f in s.received[0].payload] == [
            bytes([i]) for i in range(20)]
        await c.close()
        s.stop()
    run(main())


def test_message_split_across_many_small_writes():
    async def main():
        s = Served()
        c = await connect(s.address, TOKEN)
        big = bytes(range(256)) * 400                       # 100 KB: a frame of its own
        data = b"".join(bytes(memoryview(b)) for b in p.encode_batch([
            p.PutObject(ID, [b"stream", Frame(big)], [], None),
            p.TaskOutput(ID, "(f)", "stdout", "tiny"),
        ]))
        chunks = [data[i:i + 7] for i in range(0, 2002, 7)]
        chunks += [data[i:i + 4096] for i in range(2002, len(data), 4096)]
        assert b"".join(chunks) == data
        for chunk in chunks:
            await c.stream.write(chunk)
            await asyncio.sleep(0.0005)
        await s.wait_for(2)
        put, out = s.received
        assert put.payload[0] == b"stream" and bytes(put.payload[1].buffer) == big
        assert out == p.TaskOutput(ID, "(f)", "stdout", "tiny")
        c.abort()
        s.stop()
    run(main())


# -- sinks: reply frames read into the requester's memory ------------------------------

MB = 1024 * 1024


def _fetch_server(objects: dict, after=None):
    """A server answering FetchObject(id) with [size, Frame(bytes)] (or an error)."""
    def handler(comm, m):
        if type(m) is p.FetchObject:
            data = objects[m.object_id]            # KeyError: an error reply
            value = [len(data), Frame(memoryview(data))]
            if after is not None:
                return comm_module.ReplyThenRun(value, lambda: after(m.object_id))
            return value
        return None
    return Served(handler=handler)


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def test_reply_frame_is_read_into_the_requests_sink():
    data = _data(8 * MB, 1)

    async def main():
        s = _fetch_server({ID: data})
        c = await client(s.address)
        sink = bytearray(8 * MB)
        size, frame = await c.request(p.FetchObject(ID), timeout=10, sinks=[sink])
        assert size == 8 * MB and type(frame) is Frame
        assert frame.buffer.obj is sink and frame.buffer.readonly   # no other buffer
        assert np.array_equal(np.frombuffer(sink, np.uint8), data)
        assert c._sinks == {}                      # forgotten once the request is done
        await c.close()
        s.stop()
    run(main())


def test_sink_of_another_size_is_left_alone():
    data = _data(4 * MB, 2)

    async def main():
        s = _fetch_server({ID: data})
        c = await client(s.address)
        sink = bytearray(4 * MB + 1)
        _, frame = await c.request(p.FetchObject(ID), timeout=10, sinks=[sink])
        assert frame.buffer.obj is not sink
        assert np.array_equal(np.frombuffer(frame.buffer, np.uint8), data)
        assert sink == bytearray(4 * MB + 1)
        await c.close()
        s.stop()
    run(main())


def test_sinks_of_a_failed_request_are_forgotten():
    async def main():
        s = _fetch_server({})
        c = await client(s.address)
        with pytest.raises(KeyError):
            await c.request(p.FetchObject(ID), timeout=5, sinks=[bytearray(MB)])
        assert c._sinks == {}
        await c.close()
        s.stop()
    run(main())


def test_concurrent_fetches_each_land_correctly():
    ids = [bytes([65 + i]) * 16 for i in range(4)]
    objects = {object_id: _data(2 * MB, 10 + i) for i, object_id in enumerate(ids)}

    async def main():
        s = _fetch_server(objects)
        c = await client(s.address)
        sinks = {object_id: bytearray(2 * MB) for object_id in ids}
        replies = await asyncio.gather(*[
            c.request(p.FetchObject(object_id), timeout=10, sinks=[sinks[object_id]])
            for object_id in ids])
        for object_id, (_, frame) in zip(ids, replies):
            assert np.array_equal(np.frombuffer(frame.buffer, np.uint8), objects[object_id])
            # Whatever landed in a request's own sink is that request's data.
            if frame.buffer.obj is sinks[object_id]:
                assert np.array_equal(np.frombuffer(sinks[object_id], np.uint8),
                                      objects[object_id])
        await c.close()
        s.stop()
    run(main())


def test_a_frame_of_another_reply_never_lands_in_a_requests_sink():
    present = b"P" * 16
    data = _data(2 * MB, 3)

    async def main():
        s = _fetch_server({present: data})
        c = await client(s.address)
        missing_sink = bytearray(2 * MB)
        present_sink = bytearray(2 * MB)
        # Both requests leave in one batch; both replies come back in one batch, the
        # failing one (no frame) first.
        missing, got = await asyncio.gather(
            c.request(p.FetchObject(ID), timeout=10, sinks=[missing_sink]),
            c.request(p.FetchObject(present), timeout=10, sinks=[present_sink]),
            return_exceptions=True)
        assert isinstance(missing, RemoteCallError)
        assert np.array_equal(np.frombuffer(got[1].buffer, np.uint8), data)
        assert missing_sink == bytearray(2 * MB)      # the failed request's memory
        await c.close()
        s.stop()
    run(main())


def test_reply_then_run_runs_after_the_reply_is_written():
    """The callback may release the memory a reply frame points into (an unpin)."""
    data = bytearray(_data(32 * MB, 4).tobytes())
    expected = bytes(data)
    calls = []

    def after(object_id):
        calls.append(object_id)
        data[:] = bytes(len(data))                 # the memory is reused at once

    async def main():
        s = _fetch_server({ID: data}, after=after)
        c = await client(s.address)
        _, frame = await c.request(p.FetchObject(ID), timeout=20)
        assert bytes(frame.buffer) == expected
        assert calls == [ID]
        await c.close()
        s.stop()
    run(main(), timeout=30)


def test_reply_then_run_with_a_small_reply_runs_at_once():
    calls = []

    def handler(comm, m):
        return comm_module.ReplyThenRun("small", lambda: calls.append(1))

    async def main():
        s = Served(handler=handler)
        c = await client(s.address)
        assert await c.request(p.Ping(), timeout=5) == "small"
        assert calls == [1]
        await c.close()
        s.stop()
    run(main())


def test_reply_then_run_while_another_write_is_in_flight():
    """Two fetches served back to back: each callback waits for its own reply's write."""
    first, second = b"1" * 16, b"2" * 16
    objects = {first: bytearray(_data(32 * MB, 5).tobytes()),
               second: bytearray(_data(32 * MB, 6).tobytes())}
    expected = {k: bytes(v) for k, v in objects.items()}

    def after(object_id):
        objects[object_id][:] = bytes(32 * MB)

    async def main():
        s = _fetch_server(objects, after=after)
        c = await client(s.address)
        replies = await asyncio.gather(c.request(p.FetchObject(first), timeout=20),
                                       c.request(p.FetchObject(second), timeout=20))
        for object_id, (_, frame) in zip((first, second), replies):
            assert bytes(frame.buffer) == expected[object_id], object_id
        await c.close()
        s.stop()
    run(main(), timeout=40)


def _batch_bytes(header: bytes, frames: list) -> bytes:
    lengths = [len(header)] + [len(f) for f in frames]
    return (struct.pack("!I", len(lengths)) + b"".join(struct.pack("!Q", n) for n in lengths)
            + header + b"".join(frames))


# -- bad peers --------------------------------------------------------------------------

@pytest.mark.parametrize("garbage, problem", [
    (b"\xff" * 64, "frame count"),                           # count far above the limit
    (struct.pack("!IQ", 1, 12) + b"\xc1" * 12, "undecodable"),  # undecodable header
    (struct.pack("!IQ", 1, 3) + b"\x91\x91\x7f", "unknown message code 127"),
    (_batch_bytes(msgpack.packb([[p.CODES[p.ObjectReady], ID, [msgpack.ExtType(
        1, struct.pack("!I", 9))], None, None]], use_bin_type=True), [b"x"]), "out of range"),
    (_batch_bytes(msgpack.packb([[p.CODES[p.Ping], "extra field"]]), []),
     "Ping: Expected `array` of at most length 0"),
    # Typed fields: the error names the message type and the field.
    (_batch_bytes(msgpack.packb([[p.CODES[p.SubmitTask], b"short", ID, "f", None, [], [],
                                  [ID], 1.0, None, 0]], use_bin_type=True), []),
     "SubmitTask.task_id: Expected `bytes` of length >= 16"),
    (_batch_bytes(msgpack.packb([[p.CODES[p.Request], 5, [p.CODES[p.IncRef], [ID, 7]]]],
                                use_bin_type=True), []),
     "IncRef.ids in Request.message: Expected `bytes`, got `int`"),
    (_batch_bytes(msgpack.packb([[p.CODES[p.RegisterWorker], ID, 1, "h", "n", float("nan"),
                                  {}, "tcp://h:1", 0]], use_bin_type=True), []),
     "RegisterWorker.num_cpus: Expected `float` >= 0.0"),
], ids=["count", "header", "code", "frame-ref", "fields", "short-id", "in-request", "nan"])
def test_garbage_after_handshake_closes_only_that_connection(caplog, garbage, problem):
    async def main():
        s = Served()
        good = await client(s.address)
        bad = await connect(s.address, TOKEN)
        assert await good.request(p.Ping(), timeout=5) == "pong"
        peer = local_peer(bad)
        await bad.stream.write(garbage)
        await wait_closed(bad.stream)
        # The other connection keeps working.
        assert await good.request(p.Ping(), timeout=5) == "pong"
        good.send(p.IncRef([ID]))
        await s.wait_for(1)
        assert sum(1 for x in s.comms if x.closed) == 1
        await good.close()
        s.stop()
        return peer

    with caplog.at_level(logging.INFO, logger="graphstore.comm"):
        peer = run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "graphstore.comm"]
    assert any(peer in line and "refused a message" in line and problem in line
               for line in lines), lines


def test_wrong_token_is_refused_and_the_server_keeps_serving(caplog):
    async def main():
        s = Served()
        with pytest.raises(AuthenticationError, match="cluster token"):
            await connect(s.address, b"not the token")
        c = await client(s.address)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        s.stop()
        return len(s.comms)

    with caplog.at_level(logging.INFO, logger="graphstore.comm"):
        assert run(main()) == 1
    assert any("refused connection" in r.getMessage() and "token" in r.getMessage()
               for r in caplog.records)


def test_client_rejects_a_server_that_does_not_know_the_token():
    class Impostor(TCPServer):
        async def handle_stream(self, stream, address):
            await stream.write(handshake.HELLO.pack(handshake.MAGIC,
                                                       handshake.PROTOCOL_VERSION,
                                                       b"n" * 16))
            await stream.read_bytes(handshake.ANSWER.size)
            await stream.write(handshake.VERDICT.pack(0, b"\x00" * 32))   # "ok", no proof

    async def main():
        server = Impostor()
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        with pytest.raises(AuthenticationError, match="does not know"):
            await connect(f"tcp://127.0.0.1:{sockets[0].getsockname()[1]}", TOKEN)
        server.stop()
    run(main())


def test_client_rejects_a_non_graphstore_server():
    class Http(TCPServer):
        async def handle_stream(self, stream, address):
            await stream.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            stream.close()

    async def main():
        server = Http()
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        with pytest.raises(ProtocolError, match="not a graphstore server"):
            await connect(f"tcp://127.0.0.1:{sockets[0].getsockname()[1]}", TOKEN)
        server.stop()
    run(main())


def test_server_refuses_another_protocol_version(caplog):
    async def main():
        s = Served()
        raw = await raw_connect(s.port)
        magic, version, nonce = handshake.HELLO.unpack(
            await raw.read_bytes(handshake.HELLO.size))
        assert magic == handshake.MAGIC and version == handshake.PROTOCOL_VERSION
        await raw.write(handshake.ANSWER.pack(magic, version + 1, b"c" * 16, b"p" * 32))
        status, reason = handshake.VERDICT.unpack(
            await raw.read_bytes(handshake.VERDICT.size))
        assert status == 1 and reason.startswith(b"protocol version")
        await wait_closed(raw)
        c = await client(s.address)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())
    assert any("protocol version" in r.getMessage() for r in caplog.records)


def test_client_refuses_another_protocol_version():
    class Future(TCPServer):
        async def handle_stream(self, stream, address):
            await stream.write(handshake.HELLO.pack(
                handshake.MAGIC, handshake.PROTOCOL_VERSION + 1, b"n" * 16))
            await stream.read_bytes(1)

    async def main():
        server = Future()
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        with pytest.raises(ProtocolError, match="install matching versions"):
            await connect(f"tcp://127.0.0.1:{sockets[0].getsockname()[1]}", TOKEN)
        server.stop()
    run(main())


def test_non_graphstore_clients_do_not_hurt_the_server(caplog):
    async def main():
        s = Served(handshake_timeout=0.3)
        # 1: speaks HTTP (more bytes than a handshake answer).
        http = await raw_connect(s.port)
        await http.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"A" * 100)
        # 2: connects and says nothing (handshake timeout).
        silent = await raw_connect(s.port)
        # 3: sends a few bytes and hangs up.
        short = await raw_connect(s.port)
        await short.write(b"hi")
        short.close()
        # 4: binary junk of exactly the answer's size.
        junk = await raw_connect(s.port)
        await junk.write(b"\x00\xff" * (handshake.ANSWER.size // 2))
        for stream in (http, silent, junk):
            data = await wait_closed(stream)
            assert data.startswith(handshake.MAGIC)      # only the server's hello
            assert len(data) == handshake.HELLO.size
        c = await client(s.address)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        assert len(s.comms) == 1
        await c.close()
        s.stop()

    with caplog.at_level(logging.INFO, logger="graphstore.comm"):
        run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not a graphstore peer" in m for m in messages) == 2
    assert any("TimeoutError" in m for m in messages)


def _peak_during(coro_fn):
    """Run ``coro_fn()`` in a fresh loop under tracemalloc; return (result, peak bytes)."""
    tracemalloc.start()
    try:
        result = run(coro_fn())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("prefix", [
    struct.pack("!I", 2**32 - 1),                          # frame count
    struct.pack("!IQ", 1, 2**63),                          # header length
    struct.pack("!IQ", 1, 300 * 1024**2),                  # header just over the limit
    struct.pack("!IQQ", 2, 10, 2**40),                     # frame length
    struct.pack("!IQQ", 2, 10, 4 * 1024**3 + 1),           # frame just over the limit
], ids=["count", "huge-header", "header", "huge-frame", "frame"])
def test_huge_length_prefix_is_rejected_without_allocating(caplog, prefix):
    async def main():
        s = Served()
        c = await connect(s.address, TOKEN)
        await c.stream.write(prefix)
        await wait_closed(c.stream)
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        _, peak = _peak_during(main)
    assert peak < 20 * 1024**2, f"peak {peak} bytes"
    assert any("refused a message" in r.getMessage() for r in caplog.records)


def test_small_frame_limit_is_enforced_before_allocation(caplog):
    limits = Limits(max_frame_bytes=1024**2)

    async def main():
        s = Served(limits=limits)
        c = await connect(s.address, TOKEN, limits=limits)
        await c.stream.write(struct.pack("!IQQ", 2, 10, 512 * 1024**2))
        await wait_closed(c.stream)
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        _, peak = _peak_during(main)
    assert peak < 20 * 1024**2, f"peak {peak} bytes"
    assert any("exceeds the limit" in r.getMessage() for r in caplog.records)


def test_an_announced_frame_costs_no_memory_until_its_bytes_arrive():
    """A peer may announce a frame up to max_frame_bytes and then send nothing: the
    receiver reserves address space for it, not memory (pages fill as bytes land)."""
    import psutil
    size = 256 * 1024**2
    me = psutil.Process()

    async def main():
        s = Served()
        c = await connect(s.address, TOKEN)
        header = msgpack.packb([[p.CODES[p.RegisterFunction], ID,
                                 msgpack.ExtType(1, struct.pack("!I", 1))]],
                               use_bin_type=True)
        before = me.memory_info().rss
        await c.stream.write(struct.pack("!IQQ", 2, len(header), size) + header + b"ab")
        await asyncio.sleep(0.3)          # the server has read the header and waits
        announced = me.memory_info().rss - before
        chunk = b"z" * (16 * 1024**2)
        await c.stream.write(b"cd" + chunk[:-4])
        for _ in range(size // len(chunk) - 1):
            await c.stream.write(chunk)
        await s.wait_for(1, timeout=30)
        frame = s.received[0].payload
        assert len(frame) == size and bytes(frame.buffer[:4]) == b"abcd"
        c.abort()
        s.stop()
        return announced

    announced = run(main(), timeout=60)
    assert announced < 64 * 1024**2, f"{announced} bytes committed before the data came"
