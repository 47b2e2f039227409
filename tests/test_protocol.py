"""Wire framing: graphstore.core.protocol, with no sockets.

A batch on the wire is ``u32 nframes | u64 len * nframes | frames``; frame 0 is the msgpack
header, the others are raw buffers referenced from it. These tests go through real bytes:
encode, concatenate, parse the prefix the way ``comm`` does, decode.
"""
from __future__ import annotations

import random
import struct

import msgpack
import msgspec
import numpy as np
import pytest

from graphstore.core import protocol as p
from graphstore.core.config import Limits
from graphstore.core.protocol import Frame

LIMITS = Limits()


def _id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def to_bytes(buffers) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in buffers)


def parse_wire(data: bytes, limits: Limits = LIMITS) -> tuple[list, int]:
    """Decode one batch at the start of ``data``; return (messages, bytes consumed)."""
    pos = 0
    count = p.parse_count(data[pos:pos + p.COUNT_SIZE], limits)
    pos += p.COUNT_SIZE
    lengths = p.parse_lengths(data[pos:pos + p.LENGTH_SIZE * count], count, limits)
    pos += p.LENGTH_SIZE * count
    frames = []
    for n in lengths:
        frames.append(memoryview(data)[pos:pos + n])
        pos += n
    assert pos <= len(data), "batch is truncated"
    return p.decode_header(frames[0], frames[1:]), pos


def roundtrip(messages: list) -> list:
    data = to_bytes(p.encode_batch(messages))
    decoded, used = parse_wire(data)
    assert used == len(data)
    return decoded


def normal(value):
    """Comparable form: Frames become ('frame', bytes), tuples become lists."""
    if type(value) is Frame:
        return ("frame", bytes(memoryview(value.buffer).cast("B")))
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, msgspec.Struct):
        return (type(value).__name__,
                [normal(getattr(value, f)) for f in value.__struct_fields__])
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


BIG = bytes(range(256)) * 1024           # 256 KiB: travels as its own frame
TID, FH = _id(1), b"h" * 16

SAMPLES = {
    p.Request: p.Request(7, p.SubmitTask(TID, FH, "f", [b"pickle", Frame(BIG)], [_id(2)],
                                         [_id(3)], [_id(4)], 1.5, {"GPU": 0.5}, 3)),
    p.Reply: p.Reply(7, None, {"address": "tcp://1.2.3.4:5", "n": [1, 2.5, None, True]}),
    p.RegisterClient: p.RegisterClient(_id(5), 1234, "host-a", "my-namespace"),
    p.RegisterWorker: p.RegisterWorker(_id(6), 99, "host-b", "node-b", 4.0, {"GPU": 2.0},
                                       "tcp://10.0.0.1:7000", 2 * 1024**3),
    p.RegisterFunction: p.RegisterFunction(FH, b"\x80\x05cloudpickled"),
    p.SubmitTask: p.SubmitTask(TID, FH, "g", None, [], [], [_id(9)], 0.0, None, 0, _id(8),
                               None, 2, {"env_vars": {"A": "b"}, "max_calls": 1,
                                      "strategy": ["node", "n1", True]}),
    p.PutObject: p.PutObject(_id(10), [b"\x80\x05stream", Frame(BIG), b""], [_id(11)],
                             None),
    p.IncRef: p.IncRef([_id(12), _id(13)]),
    p.DecRef: p.DecRef([_id(12)]),
    p.WantObjects: p.WantObjects([_id(14), _id(15), _id(16)]),
    p.ObjectReady: p.ObjectReady(_id(14), [b"value", Frame(BIG)], None, None),
    p.FunctionCode: p.FunctionCode(FH, b"code" * 100),
    p.RunTask: p.RunTask(TID, FH, "f", [b"args"],
                         [[_id(2), [b"dep", Frame(BIG)], None],
                          [_id(3), None, [["node-a", "tcp://10.0.0.2:7001", "gs-c-w-1",
                                           50_000_000]]]],
                         [_id(4)]),
    p.TaskDone: p.TaskDone(TID, [[_id(4), [b"result", Frame(BIG)], [_id(2)], len(BIG) + 6,
                                  None],
                                 [_id(5), None, [], 50_000_000, "gs-c-w-7"]], 0.125,
                           [["transfer", _id(5).hex(), 1.5, 1.75, 4242, TID, 50_000_000,
                             "tcp://10.0.0.2:7001"], ["task", "f", 1.25, 2.0, 4242, TID]],
                           1.25),
    p.TaskFailed: p.TaskFailed(TID, [b"pickled TaskError"], 2.5, "ValueError: bad", False,
                               None, None, 1.5),
    p.TaskOutput: p.TaskOutput(TID, "(f pid=3)", "stdout", "héllo\n", ["bar: 50%"]),
    p.Output: p.Output("(f pid=3)", "stderr", "warning\n", TID, []),
    p.ClusterInfo: p.ClusterInfo(3, {"CPU": 12.0, "GPU": 1.0},
                                 [[_id(6), "node-b", "tcp://10.0.0.1:7000"]]),
    p.Ping: p.Ping(),
    # The shared-memory object store's messages.
    p.LeaseObjects: p.LeaseObjects([_id(20), _id(21)]),
    p.ReleaseLeases: p.ReleaseLeases([[_id(20), "gs-cluster-w1-2@4096"]]),
    p.RevokeLeases: p.RevokeLeases([[_id(20), "gs-cluster-w1-2@4096"],
                                    [_id(21), "gs-cluster-w1-3"]]),
    p.ObjectAdded: p.ObjectAdded(_id(22), "gs-cluster-w1-3"),
    p.FreeObjects: p.FreeObjects([[_id(22), True], [_id(23), False]]),
    p.SealObjects: p.SealObjects([_id(22)]),
    p.AllocateObject: p.AllocateObject(_id(24), 200 * 1024**2, True),
    p.ObjectsSpilled: p.ObjectsSpilled("/tmp/spill/c1/w1-ab12", [[_id(25), 0, 4096],
                                                               [_id(26), 4096, 100]]),
    p.DeleteSpilled: p.DeleteSpilled(["bucket/prefix/c1/w1-ab12"]),
    p.AdoptSegments: p.AdoptSegments([[_id(22), "gs-cluster-w1-3", 4096]]),
    p.AdoptionFailed: p.AdoptionFailed([_id(22)]),
    p.RestoreObject: p.RestoreObject(_id(27), "bucket/prefix/c1/w1-ab12", 4096, 100),
    p.RestoreOnNode: p.RestoreOnNode(_id(28), "node-a"),
    p.LocateObject: p.LocateObject(_id(29)),
    p.ReserveSegment: p.ReserveSegment(),
    # Actors.
    p.CreateActor: p.CreateActor(_id(40), _id(41), b"h" * 16, "Counter", [b"args"], [_id(42)],
                                 [], {"name": "c", "max_restarts": 2},
                                 {"inc": [1, None, None, [["k", 1, True]]],
                                  "pair": [2, 3, b"types", None],
                                  "items": ["streaming", None, True, []]}),
    p.StartActor: p.StartActor(_id(40), 3, {"env_vars": {"A": "b"}, "gpus": [1]}),
    p.StopActor: p.StopActor(_id(40), 3),
    p.RegisterActorProcess: p.RegisterActorProcess(_id(40), 1, _id(43), 4321, "host-a",
                                                   "node-a", "tcp://127.0.0.1:7001"),
    p.ActorReady: p.ActorReady(_id(40), 1, None),
    p.ActorExiting: p.ActorExiting(_id(40)),
    p.GetActor: p.GetActor(_id(40), 0),
    p.GetNamedActor: p.GetNamedActor("c", "default"),
    p.KillActor: p.KillActor(_id(40), True),
    p.ActorCallSubmitted: p.ActorCallSubmitted(_id(44), _id(40), "Counter.inc", [_id(42)],
                                               [], [_id(45)]),
    p.ActorCall: p.ActorCall(_id(44), "inc", "Counter.inc", [b"args"],
                             [[_id(42), [b"v"], None, None], [_id(46)]], [_id(45)], _id(43),
                             2, [2, True]),
    p.ActorCallRetrying: p.ActorCallRetrying(_id(44)),
    p.ActorCallDone: p.ActorCallDone(_id(44), _id(40), [[_id(45), [b"v"], [], 0, None, None]],
                                     0.01, None, None, 1.75),
    p.CancelTask: p.CancelTask(_id(45), False, True),
    p.CancelRunning: p.CancelRunning(_id(44), True),
    p.CancelQueuedCall: p.CancelQueuedCall(_id(44)),
    p.FetchObject: p.FetchObject(_id(24)),
    p.GetStoreSummary: p.GetStoreSummary(),
    p.GetMemorySummary: p.GetMemorySummary(),
    p.GetTaskRecords: p.GetTaskRecords(100),
    p.TaskBlocked: p.TaskBlocked(TID),
    p.TaskUnblocked: p.TaskUnblocked(TID),
    p.GetStatus: p.GetStatus(),
    # The status page and graph export.
    p.WorkerHeartbeat: p.WorkerHeartbeat({"store_used": 3 * 1024**3, "spilled_bytes": 0,
                                          "last_spill_error": None, "rss": 123456789}),
    p.GetTaskGraph: p.GetTaskGraph([_id(30), _id(31)], 500),
    p.GetClusterOverview: p.GetClusterOverview(),
    p.SchedulerHeartbeat: p.SchedulerHeartbeat(),
    # Generator tasks.
    p.GeneratorItem: p.GeneratorItem(_id(50), 3, _id(51), None, True, _id(43)),
    p.GeneratorItemReady: p.GeneratorItemReady(
        _id(50), 3, _id(51), None, None, [["node-a", "tcp://10.0.0.2:7001", "gs-c-w-1",
                                           50_000_000]]),
    # Tasks in processes of their own, runtime context, nodes.
    p.StartTaskProcess: p.StartTaskProcess(_id(50), {"env_vars": {"A": "1"}, "gpus": [0, 1]},
                                           1),
    p.StopTaskProcess: p.StopTaskProcess(_id(50)),
    p.ListState: p.ListState("tasks", "done", None, 100),
    p.FetchLog: p.FetchLog("scheduler", 0, 1000),
    p.ReadLog: p.ReadLog(4096, 0, 1234),
    p.RegisterTaskProcess: p.RegisterTaskProcess(_id(50), _id(6), 4242, "host-a"),
    p.TaskProcessExited: p.TaskProcessExited(_id(50), -9),
    # runtime_env packages and their set-up.
    p.LookupPackage: p.LookupPackage("gspkg://" + "a" * 64 + ".zip"),
    p.RegisterPackage: p.RegisterPackage("gspkg://" + "a" * 64 + ".zip", _id(60), 1234),
    p.GetPackage: p.GetPackage("gspkg://" + "a" * 64 + ".zip"),
    p.TaskProcessSetupFailed: p.TaskProcessSetupFailed(_id(50), [b"pickled error"]),
    p.ActorSetupFailed: p.ActorSetupFailed(_id(51), 2, [b"pickled error"]),
    p.GetTaskContext: p.GetTaskContext(TID),
    p.GetNodes: p.GetNodes(),
    p.DescribeCluster: p.DescribeCluster(),
    p.DescribeObject: p.DescribeObject(b"o" * 16),
    p.DescribeActor: p.DescribeActor(b"a" * 16),
    # Jobs.
    p.SubmitJob: p.SubmitJob("job-1", "python main.py", {"env_vars": {"A": "1"}},
                             {"owner": "tests"}, 1.0),
    p.GetJob: p.GetJob("job-1"), p.ListJobs: p.ListJobs(), p.StopJob: p.StopJob("job-1"),
    p.DeleteJob: p.DeleteJob("job-1"),
    p.ReadJobLog: p.ReadJobLog("job-1", 4096, 0, 10.0),
    # The timeline and the critical path.
    p.GetTimeline: p.GetTimeline(120),
    p.GetCriticalPath: p.GetCriticalPath(_id(4)),
    # Retiring workers (a deployment scaling down).
    p.RetireWorkers: p.RetireWorkers([_id(6), _id(7)]),
    p.ReplicateObjects: p.ReplicateObjects([[_id(8), [["node-a", "tcp://10.0.0.2:7001",
                                                        "gs-c-w-1", 50_000_000]]]]),
}


def sample(cls):
    """A message of type ``cls``: the hand-written sample, else every field filled."""
    if cls in SAMPLES:
        return SAMPLES[cls]
    return cls(*[f"{field}-value".encode() for field in cls.__struct_fields__])


ALL_TYPES = list(p.MESSAGE_TYPES)


def test_codes_are_unique_and_dense():
    assert sorted(p.CODES.values()) == list(range(len(p.MESSAGE_TYPES)))
    assert all(p.MESSAGE_TYPES[code] is cls for cls, code in p.CODES.items())


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_roundtrip_each_message_type(cls):
    message = sample(cls)
    (decoded,) = roundtrip([message])
    assert type(decoded) is cls
    assert normal(decoded) == normal(message)


@pytest.mark.parametrize("cls", [c for c in ALL_TYPES if c is not p.Request],
                         ids=lambda c: c.__name__)
def test_roundtrip_each_type_wrapped_in_request(cls):
    message = p.Request(2**40, sample(cls))
    (decoded,) = roundtrip([message])
    assert type(decoded) is p.Request and type(decoded.message) is cls
    assert decoded.rid == 2**40
    assert normal(decoded) == normal(message)


def test_request_inside_request_is_rejected():
    with pytest.raises(ValueError):
        roundtrip([p.Request(1, p.Request(2, p.Ping()))])


def test_batch_of_every_type_keeps_order():
    messages = [sample(cls) for cls in ALL_TYPES] * 3
    decoded = roundtrip(messages)
    assert [type(m) for m in decoded] == [type(m) for m in messages]
    assert normal(decoded) == normal(messages)


def test_batch_of_many_messages():
    messages = [p.IncRef([_id(i)]) if i % 2 else p.DecRef([_id(i)]) for i in range(20_000)]
    decoded = roundtrip(messages)
    assert len(decoded) == 20_000
    assert decoded[12_345] == p.IncRef([_id(12_345)])
    assert decoded[12_346] == p.DecRef([_id(12_346)])
    assert normal(decoded) == normal(messages)


def test_frames_are_separate_buffers_not_copied_into_header():
    big1 = np.arange(1_000_000, dtype=np.uint8)
    big2 = bytearray(b"x" * 300_000)
    messages = [p.PutObject(_id(1), [b"small", Frame(big1)], [], None),
                p.PutObject(_id(2), [Frame(big2)], [_id(1)], None)]
    buffers = p.encode_batch(messages)
    prefix, header, *frames = buffers
    # The big buffers are handed back as-is (no copy), in reference order.
    assert len(frames) == 2
    assert all(f is b or (isinstance(f, memoryview) and f.obj is b)
               for f, b in zip(frames, (big1, big2)))
    assert len(header) < 1000
    count = p.parse_count(prefix[:4], LIMITS)
    assert count == 3
    assert p.parse_lengths(prefix[4:], count, LIMITS) == [len(header), 1_000_000, 300_000]

    decoded, _ = parse_wire(to_bytes(buffers))
    frame = decoded[0].payload[1]
    assert type(frame) is Frame
    assert bytes(frame.buffer) == big1.tobytes()
    assert decoded[0].payload[0] == b"small"
    assert bytes(decoded[1].payload[0].buffer) == bytes(big2)
    assert len(frame) == 1_000_000


def test_frame_length_uses_nbytes_for_multibyte_buffers():
    arr = np.arange(50_000, dtype=np.float64).reshape(100, 500)
    buffers = p.encode_batch([p.PutObject(_id(1), [Frame(arr)], [], None)])
    lengths = p.parse_lengths(buffers[0][4:], 2, LIMITS)
    assert lengths[1] == arr.nbytes
    decoded, _ = parse_wire(to_bytes(buffers))
    back = np.frombuffer(decoded[0].payload[0].buffer, dtype=np.float64).reshape(100, 500)
    np.testing.assert_array_equal(back, arr)


def test_the_same_frame_twice_is_sent_twice_and_decodes_independently():
    f = Frame(b"z" * 100_000)
    decoded = roundtrip([p.ObjectReady(_id(1), [f], None, None),
                         p.ObjectReady(_id(2), [f], None, None)])
    assert [bytes(m.payload[0].buffer) for m in decoded] == [b"z" * 100_000] * 2


def test_empty_frame():
    (decoded,) = roundtrip([p.PutObject(_id(1), [Frame(b"")], [], None)])
    assert bytes(decoded.payload[0].buffer) == b""


def test_memoryview_and_bytearray_fields_are_sent_as_bytes():
    (decoded,) = roundtrip([p.FunctionCode(memoryview(b"abc" * 6)[:16], bytearray(b"def"))])
    assert decoded == p.FunctionCode((b"abc" * 6)[:16], b"def")


def test_unencodable_field_names_its_type():
    class Strange:
        pass

    with pytest.raises(TypeError, match="Strange"):
        p.encode_batch([p.Reply(1, None, Strange())])


def test_wire_payload_splits_at_threshold():
    small, edge, big = b"a" * 99, b"b" * 100, bytearray(b"c" * 101)
    out = p.wire_payload([small, edge, big], split_bytes=100)
    assert out[0] is small
    assert type(out[1]) is Frame and out[1].buffer is edge
    assert type(out[2]) is Frame and out[2].buffer is big
    assert p.unwrap(out[2]) is big and p.unwrap(small) is small


def test_every_message_type_has_a_hand_written_sample():
    """So each type's round trip uses realistic field values (ids, frames, locations)."""
    assert [c.__name__ for c in ALL_TYPES if c not in SAMPLES] == []


def test_stored_object_fields_survive_the_wire():
    # Nested records are sent as lists and decoded as tuples (their declared types).
    location = [["node-a", "tcp://10.0.0.2:7001", "gs-c-w-1", 2**40]]
    (ready,) = roundtrip([p.ObjectReady(_id(1), None, None, location)])
    assert ready.payload is None and ready.location == [tuple(location[0])]
    (put,) = roundtrip([p.PutObject(_id(1), None, [_id(2)], [_id(3), "gs-c-w-1", 2**40])])
    assert put.payload is None and put.location == (_id(3), "gs-c-w-1", 2**40)
    (done,) = roundtrip([p.TaskDone(TID, [[_id(4), None, [], 2**33, "gs-c-w-9"]], 1.0)])
    assert done.results == [(_id(4), None, [], 2**33, "gs-c-w-9")]
    (reg,) = roundtrip([p.RegisterWorker(_id(6), 1, "h", "n", 1.0, {}, "tcp://h:1", 0)])
    assert reg.store_capacity == 0 and reg.labels == {}
    (reg,) = roundtrip([p.RegisterWorker(_id(6), 1, "h", "n", 1.0, {}, "tcp://h:1", 0,
                                         {"slurm_job_id": "42"})])
    assert reg.labels == {"slurm_job_id": "42"}


@pytest.mark.parametrize("labels", [
    {"k": 1}, {1: "v"}, {"": "v"}, {"k" * 129: "v"}, {"k": "v" * 257}, ["k", "v"],
    {f"k{i}": "v" for i in range(p.MAX_LABELS + 1)},
], ids=["int-value", "int-key", "empty-key", "long-key", "long-value", "list", "too-many"])
def test_worker_labels_are_checked_on_decoding(labels):
    message = p.RegisterWorker(_id(6), 1, "h", "n", 1.0, {}, "tcp://h:1", 0, labels)
    with pytest.raises(ValueError, match="RegisterWorker.labels"):
        roundtrip([message])


def test_decode_header_deferred_gives_placeholders_to_fill():
    a, b = b"a" * 100_000, b"b" * 200_000
    prefix, header, *frames = p.encode_batch([
        p.ObjectReady(_id(1), [b"small", Frame(a)], None, None),
        p.Reply(3, None, [2, Frame(b)]),
    ])
    messages, placeholders = p.decode_header_deferred(header, len(frames))
    assert sorted(placeholders) == [0, 1]
    assert all(type(f) is Frame and f.buffer is None for f in placeholders.values())
    assert messages[0].payload[1] is placeholders[0]
    assert messages[1].value[1] is placeholders[1]
    # The receiver picks where each frame goes, then fills the placeholders in.
    placeholders[0].buffer, placeholders[1].buffer = frames
    assert messages[0].payload == [b"small", placeholders[0]]
    assert bytes(messages[0].payload[1].buffer) == a
    assert bytes(messages[1].value[1].buffer) == b


def test_decode_header_deferred_checks_frame_references():
    header = p.encode_batch([p.ObjectReady(_id(1), [Frame(b"x" * 10)], None, None)])[1]
    with pytest.raises(ValueError, match="out of range"):
        p.decode_header_deferred(header, 0)
    messages, placeholders = p.decode_header_deferred(header, 1)
    assert list(placeholders) == [0]
    with pytest.raises(ValueError):
        p.decode_header_deferred(b"\xc1", 0)


# -- malformed input ----------------------------------------------------------------------

def header(obj, **kw) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, **kw)


def ext_ref(index: int, code: int = 1) -> msgpack.ExtType:
    return msgpack.ExtType(code, struct.pack("!I", index))


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\xff\xfe\xfd", b"\x92\x91\x00",   # reserved byte, junk, truncated list
    b"\x91\x91\x12" + b"trailing",                      # extra data after the header
    b"GET / HTTP/1.1\r\n\r\n",
], ids=["empty", "reserved", "junk", "truncated", "trailing", "http"])
def test_garbage_header_raises_value_error(data):
    with pytest.raises(ValueError):
        p.decode_header(data, [])


@pytest.mark.parametrize("obj", [
    {"a": 1}, 5, "text", None,                     # not a list
    [5], [None], [b"\x00"],                        # items that are not lists
    [[]],                                          # no code
    [[999]], [[len(p.MESSAGE_TYPES)]], [["a"]], [[1.5]], [[None]],  # unknown codes
    [[p.CODES[p.Ping], 1]],                        # too many fields
    [[p.CODES[p.IncRef]]],                         # too few fields
    [[p.CODES[p.Request], 1]],                     # request without inner message
    [[p.CODES[p.Request], 1, [999]]],              # request with unknown inner code
], ids=repr)
def test_malformed_messages_raise_value_error(obj):
    with pytest.raises(ValueError):
        p.decode_header(header(obj), [])


@pytest.mark.parametrize("code", [-1, -2, -len(p.MESSAGE_TYPES)])
def test_negative_message_code_is_unknown(code):
    with pytest.raises(ValueError, match="unknown message code"):
        p.decode_header(header([[code]]), [])


def test_map_item_raises_value_error():
    with pytest.raises(ValueError):
        p.decode_header(header([{}]), [])


def test_deeply_nested_requests_raise_value_error():
    depth = 1020
    # [[0, 0, [0, 0, [... [Ping] ...]]]] built by hand: msgpack's packer refuses the depth.
    data = b"\x91" + b"\x93\x00\x00" * depth + b"\x91" + bytes([p.CODES[p.Ping]])
    with pytest.raises(ValueError):
        p.decode_header(data, [])


def test_wrong_ext_code_raises():
    with pytest.raises(ValueError, match="ext type"):
        p.decode_header(header([[p.CODES[p.ObjectReady], TID, [ext_ref(1, code=7)], None,
                                 None]]), [b"frame"])


@pytest.mark.parametrize("index", [0, 2, 2**32 - 1])
def test_out_of_range_frame_reference_raises(index):
    with pytest.raises(ValueError, match="out of range"):
        p.decode_header(header([[p.CODES[p.ObjectReady], TID, [ext_ref(index)], None,
                                 None]]), [b"only one frame"])


def test_frame_reference_with_bad_length_raises():
    bad = msgpack.ExtType(1, b"\x00\x01")          # 2 bytes, not a u32
    with pytest.raises(ValueError):
        p.decode_header(header([[p.CODES[p.ObjectReady], TID, [bad], None, None]]), [b"x"])


def test_valid_frame_reference_decodes():
    (m,) = p.decode_header(header([[p.CODES[p.ObjectReady], TID, [ext_ref(2)], None,
                                   None]]),
                           [b"one", b"two"])
    assert type(m.payload[0]) is Frame and m.payload[0].buffer == b"two"


def test_mutated_headers_only_raise_value_error():
    """Flip bytes of real headers: decoding either succeeds or raises ValueError."""
    rng = random.Random(1234)
    headers = [p.encode_batch([sample(cls)])[1] for cls in ALL_TYPES]
    frames = [BIG]
    other = []
    for _ in range(3000):
        data = bytearray(rng.choice(headers))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] = rng.choice([rng.randrange(256), 0xdc, 0xdd, 0xc7, 0xd4, 0x80, 0xff])
        try:
            p.decode_header(bytes(data), frames)
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            other.append((bytes(data), repr(exc)))
    assert other == []


# -- field checks -----------------------------------------------------------------------

def test_every_message_type_is_a_tagged_array_like_struct():
    for cls in ALL_TYPES:
        config = cls.__struct_config__
        assert config.array_like and config.tag == p.CODES[cls], cls.__name__


class Raw:
    """A message as a peer may send it, built without the sender-side checks."""

    def __init__(self, cls, *fields):
        self.cls, self.fields = cls, list(fields)

    def wire(self) -> list:
        return [p.CODES[self.cls], *self.fields]


def _with(message, **fields) -> Raw:
    values = {f: getattr(message, f) for f in message.__struct_fields__}
    values.update(fields)
    return Raw(type(message), *values.values())


def _raw(cls, *fields) -> Raw:
    return Raw(cls, *fields)


SUBMIT = SAMPLES[p.SubmitTask]


@pytest.mark.parametrize("message, field", [
    (_with(SUBMIT, num_cpus="2"), "SubmitTask.num_cpus"),
    (_with(SUBMIT, num_cpus=float("nan")), "SubmitTask.num_cpus"),
    (_with(SUBMIT, num_cpus=float("inf")), "SubmitTask.num_cpus"),
    (_with(SUBMIT, num_cpus=-1), "SubmitTask.num_cpus"),
    (_with(SUBMIT, resources={"GPU": -1}), "SubmitTask.resources"),
    (_with(SUBMIT, resources={1: 1}), "SubmitTask.resources"),
    (_with(SUBMIT, deps=[1, 2]), "SubmitTask.deps"),
    (_with(SUBMIT, returns=_id(1)), "SubmitTask.returns"),
    (_with(SUBMIT, task_id="not bytes"), "SubmitTask.task_id"),
    (_with(SUBMIT, max_retries=None), "SubmitTask.max_retries"),
    (_raw(p.PutObject, _id(1), None, [], [_id(2), "seg"]), "PutObject.location"),
    (_raw(p.PutObject, _id(1), [1, 2], [], None), "PutObject.payload"),
    (_raw(p.PutObject, _id(1), None, [], None), "PutObject: payload or location, not both"),
    (_raw(p.PutObject, _id(1), [b"x"], [], [_id(2), "seg", 1]),
     "PutObject: payload or location, not both"),
    (_with(SUBMIT, task_id=b"short id"), "SubmitTask.task_id"),
    (_with(SUBMIT, returns=[_id(1), b"x" * 17]), "SubmitTask.returns"),
    (_raw(p.ObjectsSpilled, "/spill/f", [[_id(1), 0]]), "ObjectsSpilled.entries"),
    (_raw(p.RegisterClient, 7, 1, "host"), "RegisterClient.client_id"),
    (_raw(p.IncRef, [[1]]), "IncRef.ids"),
    (_raw(p.AllocateObject, _id(1), -5, False), "AllocateObject.size"),
    (_raw(p.AllocateObject, _id(1), 5, "yes"), "AllocateObject.lease"),
    (_raw(p.ReleaseLeases, [[_id(1), 7]]), "ReleaseLeases.keys"),
    (_raw(p.RevokeLeases, [_id(1)]), "RevokeLeases.keys"),
    (_with(SAMPLES[p.CreateActor], options={"num_cpus": "x"}), "CreateActor.options"),
    (_with(SAMPLES[p.CreateActor], methods={"inc": -1}), "CreateActor.methods"),
    (_with(SAMPLES[p.CreateActor], methods={"inc": "many"}), "CreateActor.methods"),
    (_with(SUBMIT, mode=3), "SubmitTask.mode"),
    (_with(SAMPLES[p.ActorCall], mode="streaming"), "ActorCall.mode"),
    (_with(SAMPLES[p.TaskFailed], partial="x"), "TaskFailed.partial"),
    (_raw(p.GeneratorItem, _id(1), -1, _id(2), None, True, b""), "GeneratorItem.index"),
    (_with(SAMPLES[p.CreateActor], methods={"inc": ["many", None, None, None]}),
     "CreateActor.methods"),
    (_with(SAMPLES[p.CreateActor], methods={"inc": [0, None, None, None]}),
     "CreateActor.methods"),
    (_with(SAMPLES[p.CreateActor], methods={"inc": [1, None, None, [["k", 7, True]]]}),
     "CreateActor.methods"),
    (_with(SAMPLES[p.ActorCall], retry=[-1, True]), "ActorCall.retry"),
    (_raw(p.Reply, [1], None, None), "Reply.rid"),
    (_with(SUBMIT, extra={"env_vars": {"A": 1}}), "SubmitTask.extra"),
    (_with(SUBMIT, extra={"max_calls": -1}), "SubmitTask.extra"),
    (_with(SUBMIT, extra={"strategy": ["node", 5, True]}), "SubmitTask.extra"),
    (_with(SUBMIT, extra={"strategy": "EVERYWHERE"}), "SubmitTask.extra"),
    (_raw(p.StartTaskProcess, _id(1), {"gpus": [-1]}, 0), "StartTaskProcess.environment"),
    (_raw(p.StartTaskProcess, _id(1), {"runtime_env": {"working_dir": 7}}, 0),
     "StartTaskProcess.environment"),
    (_raw(p.StartTaskProcess, _id(1), {"runtime_env": {"pip": {"packages": "x"}}}, 0),
     "StartTaskProcess.environment"),
    (_with(SUBMIT, extra={"runtime_env": {"conda": "x"}}), "SubmitTask.extra"),
    (_raw(p.StartActor, _id(1), 1, {"env_vars": ["A"]}), "StartActor.environment"),
    (_with(SAMPLES[p.CreateActor], options={"scheduling_strategy": ["node"]}),
     "CreateActor.options"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_fields_of_the_wrong_kind_are_refused_when_decoded(message, field):
    """A malformed message never reaches a handler (the connection closes instead); the
    error names the message type and the field."""
    data = msgpack.packb([message.wire()], use_bin_type=True)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        p.decode_header(data, [])
    data = msgpack.packb([[p.CODES[p.Request], 3, message.wire()]], use_bin_type=True)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as error:
        p.decode_header(data, [])
    assert "Request.message" in str(error.value)


_LOC = ["node-a", "tcp://10.0.0.2:7001", "gs-c-w-1", 64]
_SPILL = [None, "/spill/f", 0, 64]
_SHORT = b"short id"


def _task_done(*result) -> Raw:
    return _raw(p.TaskDone, TID, [list(result)], 1.0)


def _run_task(*dep) -> Raw:
    return _raw(p.RunTask, TID, FH, "f", None, [list(dep)], [_id(9)])


# Each nested record: wrong length, an element of the wrong kind, an id of the wrong
# length; the error names the message type, its field, and the path to the element.
@pytest.mark.parametrize("message, field, path", [
    # TaskDone.results: (id, payload, contained, size, segment or (worker id, segment))
    (_task_done(_id(1), None, [], 5), "TaskDone.results", "$[0][2][0]"),
    (_task_done(_id(1), None, [], 5, "seg", None), "TaskDone.results", "$[0][2][0]"),
    (_task_done(_id(1), None, [], -5, "seg"), "TaskDone.results", "$[0][2][0][3]"),
    (_task_done(_id(1), None, [], 5, 7), "TaskDone.results", "$[0][2][0][4]"),
    (_task_done(_id(1), "inline", [], 5, None), "TaskDone.results", "$[0][2][0][1]"),
    (_task_done(_SHORT, None, [], 5, "seg"), "TaskDone.results", "$[0][2][0][0]"),
    (_task_done(_id(1), None, [_SHORT], 5, "seg"), "TaskDone.results", "$[0][2][0][2][0]"),
    (_task_done(_id(1), None, [], 5, [_SHORT, "seg"]), "TaskDone.results",
     "$[0][2][0][4][0]"),
    (_task_done(_id(1), None, [], 5, [_id(2)]), "TaskDone.results", "$[0][2][0][4]"),
    (_with(SAMPLES[p.TaskFailed], partial=[[_id(1), None, [], 5]]), "TaskFailed.partial",
     "$[0][6][0]"),
    (_with(SAMPLES[p.TaskFailed], partial=[[_SHORT, None, [], 5, None]]),
     "TaskFailed.partial", "$[0][6][0][0]"),
    # RunTask.deps: (id, payload, locations)
    (_run_task(_id(1), None), "RunTask.deps", "$[0][5][0]"),
    (_run_task(_SHORT, None, None), "RunTask.deps", "$[0][5][0][0]"),
    (_run_task(_id(1), None, [_LOC[:3]]), "RunTask.deps", "$[0][5][0][2][0]"),
    (_run_task(_id(1), None, [[7, *_LOC[1:]]]), "RunTask.deps", "$[0][5][0][2][0][0]"),
    (_run_task(_id(1), None, [[*_LOC[:3], -1]]), "RunTask.deps", "$[0][5][0][2][0][3]"),
    (_run_task(_id(1), None, [[None, "/spill/f", 1.5, 64]]), "RunTask.deps",
     "$[0][5][0][2][0][2]"),
    # ObjectReady / GeneratorItemReady locations
    (_raw(p.ObjectReady, _id(1), None, None, [_LOC, _SPILL[:3]]), "ObjectReady.location",
     "$[0][4][1]"),
    (_raw(p.ObjectReady, _id(1), None, None, [[*_LOC[:3], "64"]]), "ObjectReady.location",
     "$[0][4][0][3]"),
    (_raw(p.GeneratorItemReady, _id(1), 0, _id(2), None, None, [[1, *_LOC[1:]]]),
     "GeneratorItemReady.location", "$[0][6][0][0]"),
    # PutObject.location: (worker id, segment, size)
    (_raw(p.PutObject, _id(1), None, [], [_SHORT, "seg", 1]), "PutObject.location",
     "$[0][4][0]"),
    (_raw(p.PutObject, _id(1), None, [], [_id(2), "seg", 1, 2]), "PutObject.location",
     "$[0][4]"),
    # ActorCallDone.results: (id, payload, contained, size, stored at, error)
    (_raw(p.ActorCallDone, _id(1), _id(2), [[_id(3), None, [], 0, None]], 1.0, None),
     "ActorCallDone.results", "$[0][3][0]"),
    (_raw(p.ActorCallDone, _id(1), _id(2), [[_id(3), None, [], 8, [_id(4), "seg", 8, "a"],
                                            None]], 1.0, None),
     "ActorCallDone.results", "$[0][3][0][4]"),
    (_raw(p.ActorCallDone, _id(1), _id(2), [[_id(3), None, [], 0, None, "error"]], 1.0,
          None), "ActorCallDone.results", "$[0][3][0][5]"),
    (_raw(p.ActorCallDone, _id(1), _id(2), [[_SHORT, None, [], 0, None, None]], 1.0, None),
     "ActorCallDone.results", "$[0][3][0][0]"),
    # ActorCall.retry: (retries left, retry_exceptions)
    (_with(SAMPLES[p.ActorCall], retry=[1]), "ActorCall.retry", "$[0][9]"),
    (_with(SAMPLES[p.ActorCall], retry=[1, "ValueError"]), "ActorCall.retry", "$[0][9][1]"),
    # ClusterInfo.workers: (worker id, node id, address)
    (_raw(p.ClusterInfo, 1, {}, [[_id(1), "node"]]), "ClusterInfo.workers", "$[0][3][0]"),
    (_raw(p.ClusterInfo, 1, {}, [[_SHORT, "node", "tcp://h:1"]]), "ClusterInfo.workers",
     "$[0][3][0][0]"),
    (_raw(p.ClusterInfo, 1, {}, [[_id(1), "node", 7]]), "ClusterInfo.workers",
     "$[0][3][0][2]"),
    (_raw(p.ClusterInfo, 1, {"CPU": -1.0}, []), "ClusterInfo.resources", "$[0][2][...]"),
    (_raw(p.GetTaskGraph, [_SHORT], 10), "GetTaskGraph.roots", "$[0][1][0]"),
    # FreeObjects.entries: (id, reusable)
    (_raw(p.FreeObjects, [[_id(1)]]), "FreeObjects.entries", "$[0][1][0]"),
    (_raw(p.FreeObjects, [[_id(1), "yes"]]), "FreeObjects.entries", "$[0][1][0][1]"),
    (_raw(p.FreeObjects, [[_SHORT, True]]), "FreeObjects.entries", "$[0][1][0][0]"),
    # ReleaseLeases / RevokeLeases.keys: (id, segment)
    (_raw(p.ReleaseLeases, [[_id(1), "seg", 3]]), "ReleaseLeases.keys", "$[0][1][0]"),
    (_raw(p.RevokeLeases, [[_SHORT, "seg"]]), "RevokeLeases.keys", "$[0][1][0][0]"),
    (_raw(p.RevokeLeases, [[_id(1), None]]), "RevokeLeases.keys", "$[0][1][0][1]"),
    # ObjectsSpilled.entries: (id, offset, size)
    (_raw(p.ObjectsSpilled, "/spill/f", [[_id(1), 0, -1]]), "ObjectsSpilled.entries",
     "$[0][2][0][2]"),
    (_raw(p.ObjectsSpilled, "/spill/f", [[_SHORT, 0, 1]]), "ObjectsSpilled.entries",
     "$[0][2][0][0]"),
    # AdoptSegments.entries: (id, segment, size)
    (_raw(p.AdoptSegments, [[_id(1), "seg"]]), "AdoptSegments.entries", "$[0][1][0]"),
    (_raw(p.AdoptSegments, [[_id(1), 5, 1]]), "AdoptSegments.entries", "$[0][1][0][1]"),
    (_raw(p.AdoptSegments, [[_SHORT, "seg", 1]]), "AdoptSegments.entries",
     "$[0][1][0][0]"),
    # ReplicateObjects.entries: (id, locations)
    (_raw(p.ReplicateObjects, [[_id(1)]]), "ReplicateObjects.entries", "$[0][1][0]"),
    (_raw(p.ReplicateObjects, [[_SHORT, [_LOC]]]), "ReplicateObjects.entries",
     "$[0][1][0][0]"),
    (_raw(p.ReplicateObjects, [[_id(1), [_LOC[1:]]]]), "ReplicateObjects.entries",
     "$[0][1][0][1][0]"),
], ids=lambda v: v if isinstance(v, str) and not v.startswith("$") else "")
def test_malformed_nested_records_are_refused_when_decoded(message, field, path):
    data = msgpack.packb([message.wire()], use_bin_type=True)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as error:
        p.decode_header(data, [])
    assert f"`{path}`" in str(error.value)


@pytest.mark.parametrize("message", [
    _task_done(_id(1), [b"v"], [_id(2)], 0, None),
    _task_done(_id(1), None, [], 5, "gs-c-w-1"),
    _task_done(_id(1), None, [], 5, [_id(2), "gs-c-w-1"]),
    _run_task(_id(1), None, [_LOC, _SPILL]),
    _run_task(_id(1), [b"v"], None),
    _raw(p.ActorCallDone, _id(1), b"", [[_id(3), None, [], 8, [_id(4), "seg", 8], None],
                                       [_id(5), None, [], 0, None, [b"err"]]], 1.0, None),
], ids=repr)
def test_each_shape_of_a_nested_record_is_accepted(message):
    """The shapes producers send (a task process's result names its worker's store; a
    spilled copy's location starts with None)."""
    data = msgpack.packb([message.wire()], use_bin_type=True)
    (decoded,) = p.decode_header(data, [])
    assert type(decoded) is message.cls


def test_wrong_number_of_fields_is_refused():
    header = msgpack.packb([[p.CODES[p.IncRef], [], "extra"]], use_bin_type=True)
    with pytest.raises(ValueError, match="IncRef: Expected `array` of at most length 1, got 2"):
        p.decode_header(header, [])
    header = msgpack.packb([[p.CODES[p.Request], "rid", [p.CODES[p.Ping]]]])
    with pytest.raises(ValueError, match="Request.rid: Expected `int`, got `str`"):
        p.decode_header(header, [])


@pytest.mark.parametrize("options, message", [
    ({"num_cpus": float("nan")}, "num_cpus must be a non-negative number"),
    ({"num_cpus": float("inf")}, "num_cpus must be a non-negative number"),
    ({"resources": {"GPU": float("nan")}}, "needs a non-negative amount"),
    ({"name": 3}, "name must be None or a string"),
])
def test_options_the_scheduler_would_refuse_are_refused_at_the_call_site(options, message):
    from graphstore.options import validate_options
    # A value of the wrong type is a TypeError (as in Ray), a wrong value a ValueError.
    with pytest.raises(TypeError if "name" in options else ValueError, match=message):
        validate_options(options)


# -- limits ---------------------------------------------------------------------------

def test_parse_count_limits():
    limits = Limits(max_frames=10)
    assert p.parse_count(struct.pack("!I", 1), limits) == 1
    assert p.parse_count(struct.pack("!I", 10), limits) == 10
    for bad in (0, 11, 2**32 - 1):
        with pytest.raises(ValueError, match="frame count"):
            p.parse_count(struct.pack("!I", bad), limits)


def test_parse_lengths_header_limit():
    limits = Limits(max_header_bytes=1000)
    assert p.parse_lengths(struct.pack("!Q", 1000), 1, limits) == [1000]
    with pytest.raises(ValueError, match="header of 1001 bytes"):
        p.parse_lengths(struct.pack("!Q", 1001), 1, limits)
    with pytest.raises(ValueError, match="header"):
        p.parse_lengths(struct.pack("!Q", 2**64 - 1), 1, LIMITS)


def test_parse_lengths_frame_limit():
    limits = Limits(max_frame_bytes=5000)
    ok = struct.pack("!QQQ", 10, 5000, 0)
    assert p.parse_lengths(ok, 3, limits) == [10, 5000, 0]
    with pytest.raises(ValueError, match="frame of 5001 bytes"):
        p.parse_lengths(struct.pack("!QQQ", 10, 0, 5001), 3, limits)
    with pytest.raises(ValueError, match="exceeds"):
        p.parse_lengths(struct.pack("!QQ", 10, 2**63), 2, LIMITS)


def test_parse_lengths_count_mismatch():
    with pytest.raises(ValueError, match="truncated"):
        p.parse_lengths(struct.pack("!QQ", 10, 10), 3, LIMITS)


def test_default_limits_accept_real_batches():
    buffers = p.encode_batch([p.PutObject(_id(1), [Frame(BIG)] * 3, [], None)])
    count = p.parse_count(buffers[0][:4], LIMITS)
    assert p.parse_lengths(buffers[0][4:], count, LIMITS)[1:] == [len(BIG)] * 3


def test_batch_beyond_limits_is_rejected_by_the_receiver():
    """The receiver's checks apply to what encode_batch produced: nothing slips through."""
    limits = Limits(max_frames=3, max_header_bytes=10_000, max_frame_bytes=100_000)
    too_many = p.encode_batch([p.PutObject(_id(1), [Frame(b"x")] * 3, [], None)])  # 4 frames
    with pytest.raises(ValueError):
        parse_wire(to_bytes(too_many), limits)
    big_header = p.encode_batch([p.FunctionCode(FH, b"x" * 20_000)])
    with pytest.raises(ValueError):
        parse_wire(to_bytes(big_header), limits)
    big_frame = p.encode_batch([p.PutObject(_id(1), [Frame(b"x" * 100_001)], [], None)])
    with pytest.raises(ValueError):
        parse_wire(to_bytes(big_frame), limits)
