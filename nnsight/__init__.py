"""nnsight: look inside and edit PyTorch models while they run.

Operations on proxies are recorded into an intervention graph (:mod:`nnsight.tracing`) whose
bookkeeping (node storage, names, listener/dependency counts, propagation, freeing) lives in a
Rust core, :mod:`nnsight._core`. :class:`NNsight` wraps a model so that such graphs run
interleaved with its real forward and backward passes (:mod:`nnsight.intervention`).
"""

from . import errors, intervention, models, tracing, util
from .config import CONFIG
from .errors import (
    ExecutionError,
    NNsightError,
    SerializationError,
    TracingError,
    ValidationError,
    ValueNotSetError,
)
from .models import LanguageModel, NNsight
from .tracing import Graph, Node, Proxy, proxy_wrapper

__all__ = [
    "CONFIG",
    "ExecutionError",
    "Graph",
    "LanguageModel",
    "NNsight",
    "NNsightError",
    "Node",
    "Proxy",
    "SerializationError",
    "TracingError",
    "ValidationError",
    "ValueNotSetError",
    "errors",
    "intervention",
    "models",
    "proxy_wrapper",
    "tracing",
    "util",
]
