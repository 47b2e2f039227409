"""Turning Python objects into buffers and back.

Pickle protocol 5 keeps large buffers (numpy data) out of band, so they travel as their own
frames and are never copied into the pickle stream. The standard pickler is tried first for
speed; cloudpickle takes over for what it cannot do by reference (lambdas, closures,
``__main__`` definitions). Refs nested in the object are collected while pickling so the
scheduler can count them.
"""
from __future__ import annotations

import inspect
import io
import math
import pickle
import sys
import types
from typing import Any

import cloudpickle

from graphstore.exceptions import SerializationError
from graphstore.core.object_ref import serialization_context
from graphstore.core.protocol import Frame, unwrap

#: A serialized object: the pickle stream, then its out-of-band buffers.
Buffers = list


def _buffer_callback(out: list):
    def callback(pickle_buffer: pickle.PickleBuffer):
        try:
            out.append(pickle_buffer.raw())
        except BufferError:
            # Non-contiguous views cannot go out of band: pickle them in band (a copy).
            return True
        return False
    return callback


#: First bytes of the head of a plain numpy array (``_array_buffers``). A pickle stream
#: starts with the PROTO opcode (0x80), never with a zero byte.
_ARRAY_MARK = b"\x00gs-ndarray\x00"


def _array_buffers(obj) -> Buffers | None:
    """A plain, contiguous numpy array as [head, data]: its dtype and shape, then its
    bytes, out of band. Rebuilding it is one ``frombuffer`` (about 1 µs) where
    unpickling takes about 10: a get of ten thousand arrays is mostly that."""
    ndarray = _ndarray_type()
    if ndarray is None or type(obj) is not ndarray:
        return None
    numpy = sys.modules["numpy"]
    dtype = obj.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        return None
    if obj.flags.c_contiguous:
        order = b"C"
    elif obj.flags.f_contiguous:
        order = b"F"
    else:
        return None
    shape = b",".join(str(n).encode() for n in obj.shape)
    head = b"%s%s;%s;%s" % (_ARRAY_MARK, dtype.str.encode(), order, shape)
    data = obj.reshape(-1, order="A") if obj.ndim != 1 else obj
    return [head, memoryview(data.view(numpy.uint8) if data.size else b"")]


def _array_from(head, data):
    """The array whose head is ``head``, over ``data`` (no copy)."""
    import numpy
    shape, dtype, order = _array_spec(bytes(head))
    return numpy.ndarray(shape, dtype, buffer=data, order=order)


#: Parsed array heads, (shape, dtype, order) by head: a get of ten thousand arrays of
#: one shape parses one head.
_array_specs: dict = {}


def _array_spec(head: bytes) -> tuple:
    spec = _array_specs.get(head)
    if spec is None:
        import numpy
        dtype, order, shape = head[len(_ARRAY_MARK):].split(b";")
        spec = (tuple(int(n) for n in shape.split(b",")) if shape else (),
                numpy.dtype(dtype.decode()), order.decode())
        if len(_array_specs) >= 1024:
            _array_specs.clear()
        _array_specs[head] = spec
    return spec


def is_array_head(head) -> bool:
    """Whether a payload's first buffer is the head of a plain array (``dumps``)."""
    return head[:1] == b"\x00" and bytes(head[:len(_ARRAY_MARK)]) == _ARRAY_MARK


def loads_at(source, table: list) -> Any:
    """``loads`` of the buffers at ``table``'s (offset, length) pairs of ``source`` (a
    stored segment): a plain array is built over ``source`` directly, with no
    intermediate views."""
    if len(table) == 2:
        (head_at, head_len), (data_at, data_len) = table
        head = bytes(source[head_at:head_at + head_len])
        if is_array_head(head):
            shape, dtype, order = _array_spec(head)
            if dtype.itemsize * math.prod(shape) == data_len:
                import numpy        # built here, not via _array_from: a hot path, per object
                return numpy.ndarray(shape, dtype, buffer=source, offset=data_at,
                                     order=order)
    view = memoryview(source)
    return loads([view[at:at + length] for at, length in table])


#: ``numpy.ndarray`` once this process has imported numpy (see ``_ndarray_type``).
_ndarray = None


def _ndarray_type():
    """``numpy.ndarray`` if this process imported numpy, else None: a value that is an
    array means it did, so numpy is never imported here. Another thread may be importing
    it right now (the module is in ``sys.modules`` before it has its attributes): until
    it is done no value can be an array."""
    global _ndarray
    if _ndarray is None:
        _ndarray = getattr(sys.modules.get("numpy"), "ndarray", None)
    return _ndarray


def dumps(obj: Any, what: str = "object") -> tuple[Buffers, list[bytes]]:
    """Serialize ``obj``; return ``(buffers, ids of refs nested inside it)``.

    ``what`` names the object in the error raised when it cannot be pickled.
    """
    array = _array_buffers(obj)
    if array is not None:
        return array, []
    contained: list[bytes] = []
    previous = getattr(serialization_context, "contained", None)
    serialization_context.contained = contained
    try:
        buffers: list = [None]
        try:
            data = pickle.dumps(obj, protocol=5, buffer_callback=_buffer_callback(buffers))
            if b"__main__" in data:
                raise pickle.PicklingError("refers to __main__")
        except Exception:
            del buffers[1:]
            contained.clear()
            try:
                data = cloudpickle.dumps(obj, protocol=5,
                                         buffer_callback=_buffer_callback(buffers))
            except Exception as exc:
                raise SerializationError(
                    f"could not serialize {what} of type {type(obj).__module__}."
                    f"{type(obj).__qualname__}: {type(exc).__name__}: {exc}") from exc
        buffers[0] = data
        return buffers, contained
    finally:
        serialization_context.contained = previous


def error_payload(exc: BaseException) -> Buffers:
    """An exception as an object's error: the buffers ``loads`` raises it back from. The
    one way every process (scheduler, workers, actors, drivers) records a failure."""
    return dumps(exc, what="the error")[0]


def loads(buffers) -> Any:
    """Rebuild an object from the buffers ``dumps`` produced (frames allowed)."""
    if len(buffers) == 1:
        return pickle.loads(unwrap(buffers[0]))
    head = unwrap(buffers[0])
    if len(buffers) == 2 and is_array_head(head):
        return _array_from(head, unwrap(buffers[1]))
    return pickle.loads(head, buffers=[unwrap(b) for b in buffers[1:]])


def source_filename(fn) -> str | None:
    """The file a function (or a class's first method) was defined in."""
    code = getattr(fn, "__code__", None)
    if code is None and isinstance(fn, type):       # a class (an actor): its methods'
        code = next((m.__code__ for m in vars(fn).values() if hasattr(m, "__code__")), None)
    return code.co_filename if code is not None else None


def restore_filename(fn, filename: str | None) -> None:
    """cloudpickle names the code of functions it pickles by value ``<dynamic-code>``;
    give it back its source file (``fn`` a function, or a class: its methods) so
    tracebacks show file names and source lines."""
    if not filename:
        return
    if isinstance(fn, type):
        for member in vars(fn).values():
            if inspect.isfunction(member):
                restore_filename(member, filename)
        return
    code = getattr(fn, "__code__", None)
    if code is None or code.co_filename == filename:
        return

    def rename(c):
        consts = tuple(rename(k) if isinstance(k, type(c)) else k for k in c.co_consts)
        return c.replace(co_filename=filename, co_consts=consts)

    try:
        fn.__code__ = rename(code)
    except (TypeError, ValueError):
        pass


class _ClassPickler(cloudpickle.Pickler):
    """Pickles an actor class with its own methods by value. cloudpickle pickles a
    function by reference when ``module.Qual.name`` finds it, and the decorated class
    (``module.Actor``, an ``ActorClass``) hands out the user's class attributes, methods
    included: the workers would then need to import the user's module."""

    def __init__(self, file, owner: type):
        super().__init__(file, protocol=5)
        self._module = owner.__module__
        self._prefix = owner.__qualname__ + "."

    def reducer_override(self, obj):
        if (type(obj) is types.FunctionType and obj.__module__ == self._module
                and obj.__qualname__.startswith(self._prefix)):
            return self._dynamic_function_reduce(obj)
        return super().reducer_override(obj)


def dumps_function(fn) -> bytes:
    """Functions always go through cloudpickle so they work in any process. The payload
    is ``(function, source file name)``: the worker restores the file name cloudpickle
    drops, so remote tracebacks name the user's file and lines."""
    filename = source_filename(fn)
    try:
        if isinstance(fn, type):
            buffer = io.BytesIO()
            _ClassPickler(buffer, fn).dump((fn, filename))
            return buffer.getvalue()
        return cloudpickle.dumps((fn, filename), protocol=5)
    except Exception as exc:
        raise SerializationError(
            f"could not serialize remote function {getattr(fn, '__qualname__', fn)!r}: "
            f"{type(exc).__name__}: {exc}") from exc


def nbytes(buffers) -> int:
    return sum(len(b) if type(b) is Frame else memoryview(b).nbytes for b in buffers)
