"""Exceptions raised by nnsight. Every public exception class is declared here, once."""

from __future__ import annotations

from typing import TypeVar


class NNsightError(Exception):
    """Base class of nnsight's own errors."""


class TracingError(NNsightError, TypeError):
    """A proxy was used in a way that cannot be recorded (``if proxy:``, unbounded iteration,
    adding to a graph that is no longer tracing, mixing graphs)."""


class ValidationError(NNsightError):
    """Running an operation on fake tensors at trace time failed (a shape error, say).

    The message names the operation and the user's source line; ``__cause__`` is the original
    exception. The graph is left unchanged. The error is also an instance of the original's
    type (see :func:`caused_by`), so ``except RuntimeError:`` around a trace still catches a
    shape error, as in nnsight 0.2.
    """


class ExecutionError(NNsightError):
    """A node's target raised while the graph ran.

    The message names the node and the user's source line that created it; ``__cause__`` is the
    original exception, and the error is also an instance of its type (see :func:`caused_by`).
    The run is abandoned and every value released; ``compile`` again to rerun.
    """

    def __init__(self, message: str, node_name: str) -> None:
        super().__init__(message)
        self.node_name = node_name


class ValueNotSetError(NNsightError, ValueError):
    """``.value`` was read before the node's value was set, or after it was freed."""


class SerializationError(NNsightError, ValueError):
    """A graph cannot be written as a message (it holds a user's function, a lambda, an
    object the wire format has no spelling for), or a message cannot be read: another format
    version, truncated or corrupted bytes, a target outside the allowlist, a module path
    outside the model. Reading never executes anything from the message."""


_Error = TypeVar("_Error", bound=NNsightError)

#: (our class, the cause's class) -> a class deriving from both.
_BOTH: dict[tuple[type, type], type] = {}


def _both(ours: type[_Error], theirs: type[BaseException]) -> type[_Error]:
    key = (ours, theirs)
    kind = _BOTH.get(key)
    if kind is None:
        kind = type(
            ours.__name__,
            (ours, theirs),
            {
                "__module__": ours.__module__,
                "__qualname__": ours.__qualname__,
                # Neither the cause type's constructor (UnicodeDecodeError wants five
                # arguments) nor its __str__ (KeyError quotes its message) apply.
                "__init__": BaseException.__init__,
                "__str__": BaseException.__str__,
                "__doc__": ours.__doc__,
            },
        )
        _BOTH[key] = kind
    return kind  # type: ignore[return-value]


def caused_by(ours: type[_Error], cause: BaseException, message: str) -> _Error:
    """An ``ours`` error carrying ``message`` that is also an instance of ``type(cause)``, so
    code catching what torch raised (``RuntimeError``, ``IndexError``...) still catches it.

    Falls back to a plain ``ours`` when no class can derive from both (a cause type with a
    C layout of its own that conflicts, or one that is not an ``Exception``).
    """
    theirs = type(cause)
    error: _Error | None = None
    if isinstance(cause, Exception) and not issubclass(ours, theirs):
        try:
            error = _both(ours, theirs)(message)
        except TypeError:  # incompatible layouts, or a final exception class
            error = None
    if error is None:
        error = BaseException.__new__(ours)
        BaseException.__init__(error, message)
    error.__cause__ = cause
    return error
