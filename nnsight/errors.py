"""Exceptions raised by nnsight. Every public exception class is declared here, once."""

from __future__ import annotations


class NNsightError(Exception):
    """Base class of nnsight's own errors."""


class TracingError(NNsightError, TypeError):
    """A proxy was used in a way that cannot be recorded (``if proxy:``, unbounded iteration,
    adding to a graph that is no longer tracing, mixing graphs)."""


class ValidationError(NNsightError):
    """Running an operation on fake tensors at trace time failed (a shape error, say).

    The message names the operation and the user's source line; ``__cause__`` is the original
    exception. The graph is left unchanged.
    """


class ExecutionError(NNsightError):
    """A node's target raised while the graph ran.

    The message names the node and the user's source line that created it; ``__cause__`` is the
    original exception. The run is abandoned and every value released; ``compile`` again to rerun.
    """

    def __init__(self, message: str, node_name: str) -> None:
        super().__init__(message)
        self.node_name = node_name


class ValueNotSetError(NNsightError, ValueError):
    """``.value`` was read before the node's value was set, or after it was freed."""
