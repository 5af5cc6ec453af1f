"""nnsight: look inside and edit PyTorch models while they run.

Operations on proxies are recorded into an intervention graph (:mod:`nnsight.tracing`) whose
bookkeeping (node storage, names, listener/dependency counts, propagation, freeing) lives in a
Rust core, :mod:`nnsight._core`.
"""

from . import errors, tracing
from .errors import (
    ExecutionError,
    NNsightError,
    TracingError,
    ValidationError,
    ValueNotSetError,
)
from .tracing import Graph, Node, Proxy, proxy_wrapper

__all__ = [
    "ExecutionError",
    "Graph",
    "NNsightError",
    "Node",
    "Proxy",
    "TracingError",
    "ValidationError",
    "ValueNotSetError",
    "errors",
    "proxy_wrapper",
    "tracing",
]
