"""Errors that cross the wire: a failed request's exception as an ``ErrorRecord``, and
back as an exception of the right class on the side that asked.

The sender records the exception's type name, text and traceback; the receiver looks the
type name up in an allow-list (graphstore's exceptions and Python's built-in ones) and
raises a ``RemoteCallError`` that is also an instance of that class, so a caller writes
``except ObjectStoreFullError`` and never parses text. A type outside the allow-list
arrives as a plain ``RemoteCallError`` carrying the original type name.
"""
from __future__ import annotations

import builtins
import traceback as traceback_module

from graphstore import exceptions
from graphstore.core.protocol import ErrorRecord

#: The remote traceback kept in a record: its end, at most this many characters.
MAX_TRACEBACK = 8192


def _allowed() -> dict[str, type]:
    allowed = {name: cls for name, cls in vars(builtins).items()
               if isinstance(cls, type) and issubclass(cls, Exception)}
    allowed.update({name: cls for name, cls in vars(exceptions).items()
                    if isinstance(cls, type) and issubclass(cls, Exception)
                    and cls.__module__ == exceptions.__name__})
    return allowed


#: Type name -> the class a receiver raises an instance of.
ALLOWED: dict[str, type] = _allowed()


class RemoteCallError(Exception):
    """The peer failed to serve a request.

    Instances are also instances of the remote exception's class when that class is in
    the allow-list (``isinstance(exc, ValueError)``).

    Attributes:
        type_name: the remote exception's type name.
        text: its message.
        remote_traceback: the remote traceback, or None if not sent.
    """

    def __init__(self, text: str, type_name: str = "RemoteCallError",
                 remote_traceback: str | None = None) -> None:
        Exception.__init__(self, text)
        self.text = text
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        # The type shows once: in the class name when it is the remote one's, else here.
        if type(self).__name__ == self.type_name:
            return self.text
        return f"{self.type_name}: {self.text}"

    def __reduce__(self):
        return remote_error, (ErrorRecord(self.type_name, self.text,
                                          self.remote_traceback),)


_classes: dict[type, type] = {}


def _remote_class(cls: type) -> type:
    """``RemoteCallError`` mixed with ``cls`` (made once per class)."""
    mixed = _classes.get(cls)
    if mixed is None:
        try:
            mixed = type(cls.__name__, (RemoteCallError, cls),
                         {"__module__": __name__, "__qualname__": f"RemoteCallError[{cls.__name__}]"})
        except TypeError:          # a layout that cannot be mixed: the plain error
            mixed = RemoteCallError
        _classes[cls] = mixed
    return mixed


def error_record(exc: BaseException, with_traceback: bool = True) -> ErrorRecord:
    """The record of ``exc`` for a ``Reply``.

    Returns:
        Its type name, text and (the end of) its traceback.
    """
    if isinstance(exc, RemoteCallError):     # passed on: keep the original type
        return ErrorRecord(exc.type_name, exc.text, exc.remote_traceback)
    trace = None
    if with_traceback and exc.__traceback__ is not None:
        trace = "".join(traceback_module.format_exception(exc))[-MAX_TRACEBACK:]
    return ErrorRecord(type(exc).__name__, str(exc), trace)


def remote_error(record: ErrorRecord) -> RemoteCallError:
    """The exception a receiver raises for ``record``.

    Returns:
        A ``RemoteCallError``, also an instance of the recorded class when the allow-list
        has it.
    """
    cls = ALLOWED.get(record.type_name)
    error_class = RemoteCallError if cls is None else _remote_class(cls)
    try:
        return error_class(record.text, record.type_name, record.traceback)
    except Exception:
        return RemoteCallError(record.text, record.type_name, record.traceback)
