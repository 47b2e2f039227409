"""Errors crossing the wire as records (graphstore.core.comm.errors), with no sockets:
the sender's record, the receiver's class from the allow-list, and what survives
pickling (a task may raise an error it got from a request)."""
from __future__ import annotations

import pickle

import pytest

from graphstore.core import protocol as p
from graphstore.core.comm.errors import (ALLOWED, MAX_TRACEBACK, RemoteCallError,
                                         error_record, remote_error)
from graphstore.exceptions import ActorDiedError, GraphstoreError, ObjectStoreFullError


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:      # noqa: BLE001 - to keep its traceback
        return caught


def _through_the_wire(record: p.ErrorRecord) -> p.ErrorRecord:
    header = p.encode_batch([p.Reply(1, record, None)])[1]
    (reply,) = p.decode_header(header, [])
    return reply.error


def test_a_record_names_type_text_and_traceback():
    record = error_record(_raised(ValueError("no actor named 'x'")))
    assert (record.type_name, record.text) == ("ValueError", "no actor named 'x'")
    assert "ValueError: no actor named 'x'" in record.traceback
    assert _through_the_wire(record) == record


def test_allowed_types_come_back_as_their_class_and_as_remote_call_errors():
    for exc, cls in [(ValueError("v"), ValueError), (KeyError("k"), KeyError),
                     (OSError("o"), OSError), (ObjectStoreFullError("full"),
                                                ObjectStoreFullError),
                     (ActorDiedError("gone"), ActorDiedError)]:
        error = remote_error(_through_the_wire(error_record(_raised(exc))))
        assert isinstance(error, cls) and isinstance(error, RemoteCallError), cls
        assert type(error).__name__ == cls.__name__
        assert error.type_name == cls.__name__ and error.remote_traceback
    assert isinstance(remote_error(p.ErrorRecord("ObjectStoreFullError", "x")),
                      GraphstoreError)


def test_a_type_off_the_allow_list_is_a_plain_remote_call_error_with_its_name():
    class Private(Exception):
        pass

    error = remote_error(error_record(_raised(Private("mine"))))
    assert type(error) is RemoteCallError
    assert (error.type_name, error.text) == ("Private", "mine")
    assert str(error) == "Private: mine"
    # Names that only look like classes are never looked up anywhere else.
    for name in ("os.system", "__import__", "SystemExit", "KeyboardInterrupt", ""):
        assert type(remote_error(p.ErrorRecord(name, "t"))) is RemoteCallError, name
    assert "SystemExit" not in ALLOWED and "ValueError" in ALLOWED


def test_passing_an_error_on_keeps_its_original_type_and_traceback():
    first = remote_error(error_record(_raised(KeyError("k"))))
    again = error_record(first)
    assert (again.type_name, again.traceback) == ("KeyError", first.remote_traceback)


def test_remote_errors_pickle_to_the_same_class():
    error = remote_error(error_record(_raised(ValueError("v"))))
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and isinstance(back, ValueError)
    assert (back.text, back.remote_traceback) == ("v", error.remote_traceback)


def test_the_traceback_is_bounded():
    record = error_record(_raised(RuntimeError("x" * (3 * MAX_TRACEBACK))))
    assert len(record.traceback) == MAX_TRACEBACK


@pytest.mark.parametrize("bad", [[1, "t", None], ["T", 2, None], ["T", "t", 3],
                                 ["T", "t", None, "extra"]])
def test_a_malformed_record_is_refused_naming_the_reply(bad):
    import msgpack
    header = msgpack.packb([[p.CODES[p.Reply], 1, bad, None]], use_bin_type=True)
    with pytest.raises(ValueError, match="Reply.error"):
        p.decode_header(header, [])
