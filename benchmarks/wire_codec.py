#!/usr/bin/env python
"""Encode + decode cost of representative wire batches, per codec (issue 15).

Three codecs over the same messages:

- ``msgpack+checks``: the wire before issue 15, kept here as a reference: NamedTuple
  messages sent as ``[code, *fields]`` with ``msgpack``, each decoded field checked by
  a hand-written function from a table (``FIELD_CHECKS``).
- ``msgspec Structs``: the same layout declared as ``msgspec.Struct`` types
  (``array_like=True``, integer tags), validated by a typed decoder while it decodes.
- ``graphstore``: what ``graphstore.core.protocol`` ships now (``encode_batch`` and
  ``decode_header``), so a later change of the protocol shows up here.

Batches: 1,000 ``SubmitTask``s of a no-op (one return, no arguments), 1,000
``TaskDone``s with a small inline result, 1,000 ``RunTask``s with two ref arguments (one
inline, one stored with two copies), 1,000 ``WorkerHeartbeat``s with a dozen figures, and 100 ``PutObject``s of two buffers each, one of them an out-of-band frame.
Prints microseconds per message (best of ``--repeat`` runs), encode and decode apart.

    python benchmarks/wire_codec.py [--repeat 7]
"""
from __future__ import annotations

import abc
import argparse
import math
import struct
import time
from typing import Annotated, Any, NamedTuple, Optional, Union

import msgpack
import msgspec

from graphstore.core import protocol

ID = bytes(range(16))
_COUNT = struct.Struct("!I")


class Frame:
    __slots__ = ("buffer",)

    def __init__(self, buffer):
        self.buffer = buffer


# -- msgpack + a table of checks (the wire before issue 15) -----------------------------

class SubmitTaskT(NamedTuple):
    task_id: bytes
    function_hash: bytes
    name: str
    args: Any
    deps: list
    nested: list
    returns: list
    num_cpus: float
    resources: dict | None
    max_retries: int
    parent: bytes | None = None
    retry_exceptions: Any = None
    mode: int = 0
    extra: dict | None = None


class TaskDoneT(NamedTuple):
    task_id: bytes
    results: list
    duration: float
    events: list | None = None


class RunTaskT(NamedTuple):
    task_id: bytes
    function_hash: bytes
    name: str
    args: Any
    deps: list
    returns: list
    retry_exceptions: Any = None
    mode: int = 0


class HeartbeatT(NamedTuple):
    metrics: dict
    events: list | None = None


class PutObjectT(NamedTuple):
    object_id: bytes
    payload: list | None
    contained: list
    location: list | None


def _id(v):
    return type(v) is bytes


def _ids(v):
    return type(v) is list and all(type(i) is bytes for i in v)


def _amount(v):
    return (type(v) is int or type(v) is float) and 0 <= v and math.isfinite(v)


def _opt(check):
    return lambda v: v is None or check(v)


def _resources(v):
    return type(v) is dict and all(type(k) is str and _amount(a) for k, a in v.items())


def _payload(v):
    return type(v) is list and all(type(b) is bytes or type(b) is Frame for b in v)


def _count(v):
    return type(v) is int and v >= 0


def _location(v):
    return (type(v) is list and len(v) == 3 and type(v[0]) is bytes and type(v[1]) is str
            and _count(v[2]))


def _any(v):
    return True


TYPES_T = [SubmitTaskT, TaskDoneT, HeartbeatT, PutObjectT, RunTaskT]
CHECKS = {
    SubmitTaskT: (_id, _id, lambda v: type(v) is str, _any, _ids, _ids, _ids, _amount,
                  _opt(_resources), lambda v: type(v) is int, _opt(_id),
                  lambda v: v is None or v is True or type(v) is bytes,
                  lambda v: type(v) is int and 0 <= v <= 2, _opt(lambda v: type(v) is dict)),
    TaskDoneT: (_id, lambda v: type(v) is list, _amount, _any),
    HeartbeatT: (lambda v: type(v) is dict, _any),
    PutObjectT: (_id, _opt(_payload), _ids, _opt(_location)),
    RunTaskT: (_id, _id, lambda v: type(v) is str, _any, lambda v: type(v) is list, _ids,
               lambda v: v is None or v is True or type(v) is bytes,
               lambda v: type(v) is int and 0 <= v <= 2),
}
_CHECK_LIST = [CHECKS[cls] for cls in TYPES_T]


def legacy_encode(messages):
    frames = []

    def default(obj):
        if isinstance(obj, Frame):
            frames.append(obj.buffer)
            return msgpack.ExtType(1, _COUNT.pack(len(frames)))
        raise TypeError(type(obj).__name__)

    codes = {cls: i for i, cls in enumerate(TYPES_T)}
    return msgpack.packb([[codes[type(m)], *m] for m in messages], default=default,
                         use_bin_type=True), frames


def legacy_decode(header, frames):
    def ext_hook(code, data):
        return Frame(frames[_COUNT.unpack(data)[0] - 1])

    out = []
    for item in msgpack.unpackb(header, ext_hook=ext_hook, raw=False,
                                strict_map_key=False):
        cls = TYPES_T[item[0]]
        fields = item[1:]
        checks = _CHECK_LIST[item[0]]
        if len(fields) != len(checks):
            raise ValueError("field count")
        for check, value in zip(checks, fields):
            if not check(value):
                raise ValueError("bad field")
        out.append(cls._make(fields))
    return out


# -- msgspec Structs ----------------------------------------------------------------------

class Buffer(abc.ABC):
    """bytes, or a Frame (an out-of-band buffer)."""


Buffer.register(bytes)
Buffer.register(Frame)

Id = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Amount = Annotated[float, msgspec.Meta(ge=0, le=1.7976931348623157e308)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class Base(msgspec.Struct, array_like=True, tag=True):
    pass


class SubmitTaskS(Base, tag=0):
    task_id: Id
    function_hash: Id
    name: str
    args: Any
    deps: list[Id]
    nested: list[Id]
    returns: list[Id]
    num_cpus: Amount
    resources: Optional[dict[str, Amount]]
    max_retries: int
    parent: Optional[Id] = None
    retry_exceptions: Union[bool, bytes, None] = None
    mode: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0
    extra: Optional[dict[str, Any]] = None


class TaskDoneS(Base, tag=1):
    task_id: Id
    results: list
    duration: Amount
    events: Optional[list] = None


class HeartbeatS(Base, tag=2):
    metrics: dict[str, Any]
    events: Optional[list] = None


class PutObjectS(Base, tag=3):
    object_id: Id
    payload: Optional[list[Buffer]]
    contained: list[Id]
    location: Optional[tuple[Id, str, Count]]


Location = tuple[Optional[str], str, Union[str, Count], Count]


class RunTaskS(Base, tag=4):
    task_id: Id
    function_hash: Id
    name: str
    args: Any
    deps: list[tuple[Id, Optional[list[Buffer]], Optional[list[Location]]]]
    returns: list[Id]
    retry_exceptions: Union[bool, bytes, None] = None
    mode: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0


def typed_encode(messages, encoder):
    frames = []
    encoder_state[0] = frames
    return encoder.encode(messages), frames


encoder_state: list = [None]


def _enc_hook(obj):
    if isinstance(obj, Frame):
        frames = encoder_state[0]
        frames.append(obj.buffer)
        return msgspec.msgpack.Ext(1, _COUNT.pack(len(frames)))
    raise TypeError(type(obj).__name__)


def make_typed_decoder():
    frames_now: list = [None]

    def ext_hook(code, data):
        return Frame(frames_now[0][_COUNT.unpack(data)[0] - 1])

    decoder = msgspec.msgpack.Decoder(
        list[Union[SubmitTaskS, TaskDoneS, HeartbeatS, PutObjectS, RunTaskS]], ext_hook=ext_hook,
        dec_hook=lambda t, v: v)

    def decode(header, frames):
        frames_now[0] = frames
        return decoder.decode(header)
    return decode


# -- the batches ----------------------------------------------------------------------

def batches(kind: str) -> dict[str, list]:
    """name -> (legacy messages, typed messages, graphstore messages)."""
    ids = [i.to_bytes(16, "big") for i in range(1, 3001)]
    out = {}
    submit = [(ids[i], ID, "noop", None, [], [], [ids[i + 1000]], 1.0, None, 3)
              for i in range(1000)]
    out["SubmitTask x1000"] = submit, SubmitTaskT, SubmitTaskS, protocol.SubmitTask
    done = [(ids[i], [[ids[i + 1000], [b"\x80\x05K\x01."], [], 5, None]], 0.00012)
            for i in range(1000)]
    out["TaskDone x1000"] = done, TaskDoneT, TaskDoneS, protocol.TaskDone
    copies = [["node-1", "tcp://127.0.0.1:4000", "gs-abc-1@123", 5000000],
              ["node-2", "tcp://127.0.0.1:4001", "gs-abd-1@9", 5000000]]
    runs = [(ids[i], ID, "f", None, [[ids[i + 1000], [b"\x80\x05K\x01."], None],
                                     [ids[i + 2000], None, copies]], [ids[i + 1000]])
            for i in range(1000)]
    out["RunTask x1000 (2 deps)"] = runs, RunTaskT, RunTaskS, protocol.RunTask
    metrics = {"store_used": 123456789, "store_objects": 1234, "spilled_bytes": 0,
               "cpu_percent": 12.5, "rss": 987654321, "tasks_running": 2,
               "tasks_queued": 10, "open_fds": 40, "host": "node-1",
               "fetches": 3, "restores": 0, "evictions": 0}
    beats = [(dict(metrics), None) for _ in range(1000)]
    out["WorkerHeartbeat x1000"] = beats, HeartbeatT, HeartbeatS, protocol.WorkerHeartbeat
    big = bytes(1 << 20)
    puts = [(ids[i], [b"\x80\x05" + bytes(40), Frame(big)], [], None) for i in range(100)]
    out["PutObject x100 (1 MiB frame each)"] = puts, PutObjectT, PutObjectS, protocol.PutObject
    return out


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _gs_frame(m):
    """The same message with graphstore's own Frame type for out-of-band buffers."""
    return tuple(protocol.Frame(x.buffer) if type(x) is Frame else
                 [protocol.Frame(b.buffer) if type(b) is Frame else b for b in x]
                 if type(x) is list else x for x in m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
    typed_decode = make_typed_decoder()
    print("| batch | codec | encode µs/msg | decode µs/msg | header bytes |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, (rows, legacy_cls, typed_cls, gs_cls) in batches("all").items():
        n = len(rows)
        legacy = [legacy_cls(*r) for r in rows]
        typed = [typed_cls(*r) for r in rows]
        live = [gs_cls(*_gs_frame(r)) for r in rows]
        header, frames = legacy_encode(legacy)
        assert len(legacy_decode(header, frames)) == n
        enc = best(lambda: legacy_encode(legacy), args.repeat)
        dec = best(lambda: legacy_decode(header, frames), args.repeat)
        print(f"| {name} | msgpack+checks | {enc / n * 1e6:.2f} | {dec / n * 1e6:.2f} "
              f"| {len(header)} |")
        header, frames = typed_encode(typed, encoder)
        assert len(typed_decode(header, frames)) == n
        enc = best(lambda: typed_encode(typed, encoder), args.repeat)
        dec = best(lambda: typed_decode(header, frames), args.repeat)
        print(f"| {name} | msgspec Structs | {enc / n * 1e6:.2f} | {dec / n * 1e6:.2f} "
              f"| {len(header)} |")
        encoded = protocol.encode_batch(live)
        header, frames = encoded[1], encoded[2:]
        assert len(protocol.decode_header(header, frames)) == n
        enc = best(lambda: protocol.encode_batch(live), args.repeat)
        dec = best(lambda: protocol.decode_header(header, frames), args.repeat)
        print(f"| {name} | graphstore | {enc / n * 1e6:.2f} | {dec / n * 1e6:.2f} "
              f"| {len(header)} |")


if __name__ == "__main__":
    main()
