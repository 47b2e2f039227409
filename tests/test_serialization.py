"""graphstore.core.serialization, graphstore.core.task_args and ObjectRef, in one process."""
from __future__ import annotations

import pickle
import sys
import threading

import cloudpickle
import numpy as np
import pytest

from graphstore.core import object_ref
from graphstore.exceptions import SerializationError
from graphstore.core.object_ref import ObjectRef, new_id
from graphstore.core.protocol import Frame
from graphstore.core.serialization import dumps, dumps_function, loads, nbytes
from graphstore.core.task_args import pack_args, unpack_args


@pytest.fixture(autouse=True)
def _null_tracker(monkeypatch):
    """No runtime: refs created here must not be reported anywhere."""
    monkeypatch.setattr(object_ref, "ref_tracker", object_ref._NullTracker())


def address(buffer) -> int:
    return np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0]


def data_address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


# -- dumps / loads ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    None, 0, -1, 2**100, 1.5, "text", b"bytes", [1, [2, [3]]], {"a": (1, 2), 3: {4}},
    frozenset({1, 2}), ValueError("boom"), range(3), complex(1, 2),
])
def test_roundtrip_plain_values(value):
    buffers, contained = dumps(value)
    assert contained == []
    back = loads(buffers)
    if isinstance(value, Exception):
        assert type(back) is ValueError and back.args == ("boom",)
    else:
        assert back == value and type(back) is type(value)


def test_numpy_buffer_goes_out_of_band_without_copy():
    arr = np.arange(1_000_000, dtype=np.float64)
    buffers, _ = dumps(arr)
    assert len(buffers) == 2
    assert len(buffers[0]) < 1000                     # the pickle stream holds no data
    assert memoryview(buffers[1]).nbytes == arr.nbytes
    assert address(buffers[1]) == data_address(arr)   # a view, not a copy
    assert nbytes(buffers) == len(buffers[0]) + arr.nbytes


def test_loads_gives_arrays_backed_by_the_given_buffers():
    arr = np.arange(200_000, dtype=np.int32).reshape(400, 500)
    buffers, _ = dumps({"x": arr, "y": arr * 2})
    assert len(buffers) == 3
    # What a receiver has: its own memory (e.g. a frame read off the socket).
    received = [buffers[0]] + [bytearray(b) for b in buffers[1:]]
    back = loads(received)
    np.testing.assert_array_equal(back["x"], arr)
    np.testing.assert_array_equal(back["y"], arr * 2)
    assert data_address(back["x"]) == address(received[1])
    assert data_address(back["y"]) == address(received[2])


def test_loads_accepts_frames_and_readonly_buffers():
    arr = np.arange(100_000, dtype=np.uint16)
    buffers, _ = dumps(arr)
    readonly = memoryview(bytes(buffers[1]))
    back = loads([buffers[0], Frame(readonly)])
    np.testing.assert_array_equal(back, arr)
    assert data_address(back) == address(readonly)
    assert not back.flags.writeable


def test_same_process_roundtrip_shares_memory():
    arr = np.ones(10_000)
    back = loads(dumps(arr)[0])
    assert np.shares_memory(back, arr)


@pytest.mark.parametrize("make", [
    lambda: np.arange(100_000, dtype=np.float32)[::3],               # strided
    lambda: np.arange(120_000, dtype=np.int64).reshape(300, 400)[:, 5:50],
    lambda: np.asfortranarray(np.arange(120_000.0).reshape(300, 400)),
    lambda: np.arange(120_000.0).reshape(300, 400).T,
    lambda: np.array([1, "two", None, {"three": 3}], dtype=object),
    lambda: np.zeros(0),
    lambda: np.array(3.5),
    lambda: np.zeros(5, dtype=[("a", "i4"), ("b", "f8")]),
], ids=["strided", "sliced2d", "fortran", "transposed", "object", "empty", "scalar",
        "structured"])
def test_awkward_arrays_roundtrip(make):
    arr = make()
    back = loads(dumps(arr)[0])
    assert back.dtype == arr.dtype and back.shape == arr.shape
    if arr.dtype == object:
        assert back.tolist() == arr.tolist()
    else:
        np.testing.assert_array_equal(back, arr)


def test_noncontiguous_array_is_copied_in_band_but_still_correct():
    base = np.arange(1_000_000, dtype=np.float64)
    view = base[::2]
    buffers, _ = dumps(view)
    # Whatever numpy chose, loads must not alias the original strided memory wrongly.
    back = loads([bytes(b) if i else b for i, b in enumerate(buffers)])
    np.testing.assert_array_equal(back, view)


def test_lambda_and_closure_use_cloudpickle():
    k = 41
    fn = lambda x: x + k  # noqa: E731
    with pytest.raises(Exception):
        pickle.dumps(fn)
    buffers, contained = dumps(fn)
    assert contained == []
    assert loads(buffers)(1) == 42

    def outer(n):
        def inner(x):
            return x * n
        return inner

    assert loads(dumps(outer(3))[0])(5) == 15


def test_closure_over_array_keeps_buffer_out_of_band():
    arr = np.arange(500_000, dtype=np.float64)
    fn = lambda: arr.sum()  # noqa: E731
    buffers, _ = dumps(fn)
    assert len(buffers) == 2 and memoryview(buffers[1]).nbytes == arr.nbytes
    assert loads([buffers[0], bytearray(buffers[1])])() == arr.sum()


def test_main_module_definitions_are_pickled_by_value(monkeypatch):
    main = sys.modules["__main__"]
    Point = type("GsTestPoint", (), {"__module__": "__main__",
                                     "norm": lambda self: self.x * self.x})
    monkeypatch.setattr(main, "GsTestPoint", Point, raising=False)
    obj = Point()
    obj.x = 3
    buffers, _ = dumps(obj)
    monkeypatch.delattr(main, "GsTestPoint")
    # Another process has no __main__.GsTestPoint: the class must travel by value.
    back = loads(buffers)
    assert back.norm() == 9


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("nope, not me")


@pytest.mark.parametrize("value, type_name", [
    (threading.Lock(), "_thread.lock"),
    ((x for x in range(3)), "builtins.generator"),
    (_Unpicklable(), "_Unpicklable"),
])
def test_unpicklable_raises_serialization_error_naming_the_type(value, type_name):
    with pytest.raises(SerializationError) as info:
        dumps(value, what="the widget")
    text = str(info.value)
    assert type_name in text
    assert "the widget" in text
    assert isinstance(info.value, TypeError)   # SerializationError is a TypeError too


def test_unpicklable_inside_a_container_names_the_outer_type():
    with pytest.raises(SerializationError, match="builtins.dict"):
        dumps({"lock": threading.Lock()})


def test_dumps_function():
    def f(x):
        return x + 1
    fn, filename = pickle.loads(dumps_function(f))
    assert fn(1) == 2
    assert filename == __file__          # the worker restores it for tracebacks
    with pytest.raises(SerializationError, match="remote function"):
        lock = threading.Lock()
        dumps_function(lambda: lock)


# -- nested refs ----------------------------------------------------------------------

def test_nested_refs_are_collected():
    a, b, c = ObjectRef(new_id()), ObjectRef(new_id()), ObjectRef(new_id())
    buffers, contained = dumps([a, {"k": (b, [c])}, 5])
    assert contained == [a.id, b.id, c.id]
    back = loads(buffers)
    assert back[0] == a and back[1]["k"][0] == b and back[1]["k"][1][0] == c
    assert type(back[0]) is ObjectRef


def test_same_ref_object_twice_is_collected_once():
    a = ObjectRef(new_id())
    _, contained = dumps([a, a])
    assert contained == [a.id]


def test_refs_collected_on_the_cloudpickle_path_without_duplicates():
    a, b = ObjectRef(new_id()), ObjectRef(new_id())
    # The standard pickler sees ``a`` first, then fails on the lambda; the refs it already
    # collected must not be counted twice when cloudpickle takes over.
    value = [a, lambda: b]
    buffers, contained = dumps(value)
    assert sorted(contained) == sorted([a.id, b.id])
    back = loads(buffers)
    assert back[0] == a and back[1]() == b


def test_collection_is_scoped_to_one_dumps_call():
    a = ObjectRef(new_id())
    dumps([a])
    assert getattr(object_ref.serialization_context, "contained", None) is None
    # Pickling a ref outside dumps collects nothing and still works.
    assert pickle.loads(pickle.dumps(a)) == a


def test_collection_survives_a_failed_dumps():
    a = ObjectRef(new_id())
    with pytest.raises(SerializationError):
        dumps([a, threading.Lock()])
    assert getattr(object_ref.serialization_context, "contained", None) is None
    _, contained = dumps([a])
    assert contained == [a.id]


# -- task arguments -------------------------------------------------------------------

def test_pack_no_args():
    assert pack_args("f", (), {}, 1024) == (None, [], [])
    assert unpack_args(None, []) == ([], {})


def test_top_level_refs_become_deps_in_order():
    r1, r2, r3 = (ObjectRef(new_id()) for _ in range(3))
    payload, deps, nested = pack_args("f", (r1, 5, r2), {"k": r3, "plain": "x"}, 1024)
    assert deps == [r1.id, r2.id, r3.id]
    assert nested == []
    args, kwargs = unpack_args(payload, ["v1", "v2", "v3"])
    assert args == ["v1", 5, "v2"]
    assert kwargs == {"k": "v3", "plain": "x"}


def test_same_ref_twice_is_two_deps():
    r = ObjectRef(new_id())
    payload, deps, _ = pack_args("f", (r, r), {}, 1024)
    assert deps == [r.id, r.id]
    assert unpack_args(payload, [1, 1]) == ([1, 1], {})


def test_nested_refs_stay_refs():
    r1, r2 = ObjectRef(new_id()), ObjectRef(new_id())
    payload, deps, nested = pack_args("f", ([r1], {"x": r2}), {"opt": (r1,)}, 1024)
    assert deps == []
    assert sorted(nested) == sorted([r1.id, r2.id])
    args, kwargs = unpack_args(payload, [])
    assert args[0] == [r1] and type(args[0][0]) is ObjectRef
    assert args[1] == {"x": r2}
    assert kwargs["opt"] == (r1,)


def test_mixed_top_level_and_nested():
    top, inner = ObjectRef(new_id()), ObjectRef(new_id())
    payload, deps, nested = pack_args("f", (top, [inner]), {}, 1024)
    assert deps == [top.id] and nested == [inner.id]
    args, _ = unpack_args(payload, [np.arange(3)])
    np.testing.assert_array_equal(args[0], np.arange(3))
    assert args[1] == [inner]


def test_large_argument_becomes_a_frame():
    arr = np.arange(100_000, dtype=np.float64)
    payload, _, _ = pack_args("f", (arr, 1), {}, split_bytes=64 * 1024)
    frames = [b for b in payload if type(b) is Frame]
    assert len(frames) == 1 and len(frames[0]) == arr.nbytes
    args, _ = unpack_args(payload, [])
    np.testing.assert_array_equal(args[0], arr)


def test_culprit_positional_argument_is_named():
    with pytest.raises(SerializationError) as info:
        pack_args("my_task", (1, threading.Lock()), {"ok": 2}, 1024)
    text = str(info.value)
    assert "argument 1 of my_task" in text
    assert "_thread.lock" in text


def test_culprit_keyword_argument_is_named():
    with pytest.raises(SerializationError) as info:
        pack_args("my_task", (1,), {"ok": 2, "bad": (x for x in ())}, 1024)
    text = str(info.value)
    assert "keyword argument 'bad' of my_task" in text
    assert "generator" in text


# -- ObjectRef ------------------------------------------------------------------------

def test_object_ref_basics():
    oid = new_id()
    ref = ObjectRef(oid)
    assert repr(ref) == f"ObjectRef({oid.hex()})"
    assert ref.id == oid and ref.hex() == oid.hex()
    same = ObjectRef(oid.hex())
    assert same == ref and hash(same) == hash(ref)
    assert ref != ObjectRef(new_id())
    assert ref != oid and ref != oid.hex()
    assert {ref: 1}[same] == 1
    assert len({ref, same}) == 1


def test_object_ref_pickles_as_a_ref():
    ref = ObjectRef(new_id())
    for dump in (pickle.dumps, cloudpickle.dumps):
        back = pickle.loads(dump(ref))
        assert type(back) is ObjectRef and back == ref


@pytest.mark.parametrize("bad", [b"short", b"x" * 17, "zz" * 16, "ab", 12345, None])
def test_object_ref_rejects_bad_ids(bad):
    with pytest.raises(ValueError):
        ObjectRef(bad)


def test_new_id_is_unique():
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 16 for i in ids)


def test_ref_tracker_sees_creation_and_deletion(monkeypatch):
    events = []

    class Tracker:
        def on_ref_created(self, object_id):
            events.append(("+", object_id))

        def on_ref_deleted(self, object_id):
            events.append(("-", object_id))

    monkeypatch.setattr(object_ref, "ref_tracker", Tracker())
    oid = new_id()
    ref = ObjectRef(oid)
    copy = loads(dumps(ref)[0])       # in band; out of band pins (test_ray_pickling.py)
    del ref, copy
    assert events == [("+", oid), ("+", oid), ("-", oid), ("-", oid)]


def test_an_actor_class_from_an_importable_module_pickles_by_value(tmp_path, monkeypatch):
    """The decorated class hands out the user's methods (``module.Actor.method``), which
    must not make cloudpickle pickle them by reference: workers may lack the module."""
    import importlib
    import sys
    from graphstore.core.serialization import dumps_function
    (tmp_path / "gs_actor_module.py").write_text(
        "import graphstore\n"
        "@graphstore.remote\n"
        "class Acc:\n"
        "    def add(self, x):\n"
        "        return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("gs_actor_module")
    payload = dumps_function(module.Acc._cls)
    del sys.modules["gs_actor_module"]
    monkeypatch.undo()                       # the module is no longer importable
    cls, _ = pickle.loads(payload)
    assert cls().add(1) == 2


def test_dumps_works_while_another_thread_is_still_importing_numpy(monkeypatch):
    """numpy is in ``sys.modules`` before it has its attributes while a thread imports
    it: ``dumps`` in another thread must not fail on the half-built module."""
    import types
    from graphstore.core import serialization
    half_built = types.ModuleType("numpy")          # what another thread's import shows
    monkeypatch.setattr(serialization, "_ndarray", None)
    monkeypatch.setitem(sys.modules, "numpy", half_built)
    buffers, _ = dumps({"a": 1})
    assert loads(buffers) == {"a": 1}
    assert serialization._ndarray is None            # not cached: looked up again later
    monkeypatch.setitem(sys.modules, "numpy", np)
    buffers, _ = dumps(np.arange(4))
    assert serialization._ndarray is np.ndarray
    assert list(loads(buffers)) == [0, 1, 2, 3]


@pytest.mark.parametrize("make", [
    lambda: np.arange(12.0).reshape(3, 4),
    lambda: np.asfortranarray(np.arange(12).reshape(3, 4)),
    lambda: np.zeros((0, 5)),
    lambda: np.array(3.5),
    lambda: np.array(["ab", "cde"]),
    lambda: np.array([True, False, True]),
    lambda: np.arange(6, dtype=">i4"),
    lambda: {"not": "an array", "data": np.arange(3)},
    lambda: b"x" * 100,
])
def test_loads_at_rebuilds_what_a_stored_segment_holds(make):
    """A segment read in place (``loads_at`` over the stored bytes) gives the value back;
    a plain array is built over the segment's memory, read-only, with no copy."""
    from graphstore.core import shm
    from graphstore.core.serialization import loads_at
    value = make()
    buffers, _ = dumps(value)
    segment = bytearray(shm.encoded_size(buffers))
    shm.write_object(memoryview(segment), buffers)
    source = np.frombuffer(bytes(segment), dtype=np.uint8)
    out = loads_at(source, shm.buffer_table(source))
    if isinstance(value, np.ndarray):
        assert type(out) is np.ndarray and out.dtype == value.dtype
        assert out.shape == value.shape and np.array_equal(out, value)
        assert not out.flags.writeable and (out.size == 0 or np.shares_memory(out, source))
        assert out.flags.f_contiguous == value.flags.f_contiguous
    elif isinstance(value, dict):
        assert out.keys() == value.keys() and np.array_equal(out["data"], value["data"])
    else:
        assert out == value


def test_buffer_table_rejects_corrupt_segments():
    from graphstore.core import shm
    buffers, _ = dumps(np.arange(4.0))
    segment = bytearray(shm.encoded_size(buffers))
    shm.write_object(memoryview(segment), buffers)
    with pytest.raises(ValueError, match="past the end"):
        shm.buffer_table(segment[:-8])
    with pytest.raises(ValueError, match="not a graphstore object"):
        shm.buffer_table(bytes(8) + segment[8:])
    with pytest.raises(ValueError, match="shorter than its header"):
        shm.buffer_table(b"abc")
