"""Proxy: the object user code manipulates while a graph is traced.

Every operation on a proxy (operators, indexing, attribute access, calls, ``torch`` functions)
adds a node to the proxy's graph and returns the new node's proxy. This module imports nothing
else of the tracing layer: a proxy reaches its graph through its core (``_graph_of``).
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._core import proxy_node
from ..errors import TracingError
from ._describe import describe, describe_node
from ._source import SOURCE_FINDER, format_source
from ._walk import iter_instances

if TYPE_CHECKING:
    from .._core import GraphCore
    from .Node import Node

_EMPTY = inspect._empty


def proxy_call(callable: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Target of nodes made by calling a proxy: ``proxy(*args)`` runs ``callable(*args)``."""
    return callable(*args, **kwargs)


class Proxy:
    """Stands for the value a node will have when the graph runs.

    Attributes:
        node: This proxy's node.

    Choices where nnsight 0.2 was vague or silently wrong:
        * ``bool(proxy)`` (so ``if proxy:`` / ``while proxy:``) raises :class:`TracingError`: the
          value does not exist yet, so the branch cannot be decided.
        * ``len(proxy)`` and iteration use the length of the proxy value (known from validation,
          e.g. a tuple output or a tensor's first dimension) and raise :class:`TracingError`
          when it is unknown, instead of looping forever. ``a, b = proxy`` works for tuples.
        * ``str``/``repr`` describe the proxy value (shapes and dtypes) and never ask a tensor
          for its truth value; once the graph is no longer tracing and the value is set, they
          show the value.
        * Proxies hash by identity, so they can be kept in sets and dict keys even though
          ``==`` is traced.
        * Dunder attributes (``proxy.__array__``) are not traced: libraries probe for them.
    """

    __slots__ = ("__weakref__", "_core", "_id", "node")
    node: Node
    _core: GraphCore
    _id: int

    def __init__(self, node: Node) -> None:
        bind_node(self, node)

    @property
    def value(self) -> Any:
        """The node's value, once the graph has run. Raises
        :class:`~nnsight.errors.ValueNotSetError` before it is set or after it was freed."""
        value = self._core.value(self._id)  # straight from the core: no Node made for it
        return self.node.value if value is _EMPTY else value  # the node words the error

    def save(self) -> Proxy:
        """Keeps this value alive after the graph runs (adds a ``null`` listener); returns self."""
        _graph_of(self).add("null", None, [self])
        return self

    # ----- description ------------------------------------------------------------------------

    def __str__(self) -> str:
        node = self.node
        if not node.is_tracing() and node.done():
            return str(node.value)
        value = node.proxy_value
        shown = "?" if value is _EMPTY else describe(value)
        return f"{type(self).__name__} ({node.name}): {shown}"

    def __repr__(self) -> str:
        return self.__str__()

    __hash__ = object.__hash__

    # ----- traced Python protocol -------------------------------------------------------------

    def __getattr__(self, key: str) -> Any:
        if key == "node":  # made lazily by Graph.add: make the Node now
            return proxy_node(self)
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        return _graph_of(self).add(getattr, _EMPTY, [self, key])

    def __setattr__(self, key: str, value: Any) -> None:
        _graph_of(self).add(setattr, _EMPTY, [self, key, value])

    def __getitem__(self, key: Any) -> Proxy:
        return _graph_of(self).add(operator.getitem, _EMPTY, [self, key])

    def __setitem__(self, key: Any, value: Any) -> None:
        _graph_of(self).add(operator.setitem, _EMPTY, [self, key, value])

    def __call__(self, *args: Any, **kwargs: Any) -> Proxy:
        return _graph_of(self).add(proxy_call, _EMPTY, [self, *args], kwargs)

    def __len__(self) -> int:
        return self._static_length("len()")

    def __iter__(self) -> Iterator[Proxy]:
        length = self._static_length("iterating over")
        return (self[i] for i in range(length))

    def _known_value(self) -> Any:
        """The proxy value, run on fake tensors now when it is not known yet (see
        :mod:`nnsight.tracing.inference`); ``inspect._empty`` when it cannot be known."""
        node = self.node
        value = node.proxy_value
        if value is _EMPTY:
            graph = self._core.graph()
            if graph is not None:
                value = graph.infer_proxy_value(node)
        return value

    def _static_length(self, what: str) -> int:
        value = self._known_value()
        if value is not _EMPTY:
            try:
                return len(value)
            except TypeError:
                pass
        graph = self._core.graph()
        reason = None if graph is None else graph.unknown_reason(self.node)
        shown = describe(value) if value is not _EMPTY else "unknown"
        raise TracingError(
            f"{what} {_where(self)} needs its length, which is not known while "
            f"tracing (its proxy value is {shown}{f': {reason}' if reason else ''}). Index it "
            "explicitly (proxy[0], proxy[1], ...)."
        )

    def __bool__(self) -> bool:
        raise TracingError(
            f"the truth value of {_where(self)} is not known while tracing, so "
            "`if`/`while`/`and`/`or` on it cannot be recorded. Compute the condition with torch "
            "ops (e.g. torch.where) or use the value after the graph has run."
        )

    def __contains__(self, item: Any) -> bool:
        raise TracingError(
            f"`in` on {_where(self)} must return a bool now, but the value is not "
            "known while tracing."
        )

    def __index__(self) -> int:
        raise TracingError(
            f"{_where(self)} cannot be used as a Python int while tracing (its value "
            "is not known yet)."
        )

    __int__ = __index__

    def __float__(self) -> float:
        raise TracingError(f"{_where(self)} cannot be used as a Python float while tracing.")

    @classmethod
    def __torch_function__(
        cls,
        orig_method: Callable[..., Any],
        types: Any,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Proxy:
        kwargs = {} if kwargs is None else kwargs
        owner = _owning_proxy((args, kwargs), orig_method)
        return _graph_of(owner).add(orig_method, _EMPTY, list(args), kwargs)


_set_node = Proxy.__dict__["node"].__set__  # the slots, bypassing __setattr__
_set_core = Proxy.__dict__["_core"].__set__
_set_id = Proxy.__dict__["_id"].__set__


def bind_node(proxy: Proxy, node: Node) -> None:
    """Makes ``proxy`` the proxy of ``node``."""
    _set_node(proxy, node)
    _set_core(proxy, node._core)
    _set_id(proxy, node.id)


def _owning_proxy(values: Any, target: Any) -> Proxy:
    """The first proxy in ``values``; raises if proxies of two different graphs are mixed."""
    owner: Proxy | None = None
    for proxy in iter_instances(values, Proxy):
        if owner is None:
            owner = proxy
        elif proxy._core is not owner._core:
            raise TracingError(
                f"{getattr(target, '__name__', target)!s} mixes proxies of two graphs "
                f"({_where(owner)} and {_where(proxy)}); a proxy belongs to the trace "
                "that made it (use .save() and .value to carry values between traces)."
            )
    if owner is None:
        raise TracingError(f"{target!r} was routed to Proxy but has no proxy argument")
    return owner


def _where(proxy: Proxy) -> str:
    """A proxy as the user wrote it and the line that made it, for messages."""
    node = proxy.node
    return f"proxy {describe_node(node)} (traced at {format_source(node.source)})"


def _graph_of(proxy: Proxy) -> Any:
    """What to add a proxy's next node to: its graph, or, once the graph is gone, its node
    (whose ``add`` raises the error saying so). Leaves a lazily made node unmade."""
    graph = proxy._core.graph()
    return proxy.node if graph is None else graph


# The operators below add their node with one core call, `GraphCore.add_op` (what
# `Graph.add(op, args=...)` does); it declines (None) wherever `Graph.add` has more to do, and
# `Graph.add` is then called.


def _binary(op: Callable[[Any, Any], Any]) -> Callable[[Proxy, Any], Proxy]:
    def method(self: Proxy, other: Any) -> Proxy:
        args = [self, other]
        proxy = self._core.add_op(op, args, SOURCE_FINDER)
        return _graph_of(self).add(op, _EMPTY, args) if proxy is None else proxy

    return method


def _reflected(op: Callable[[Any, Any], Any]) -> Callable[[Proxy, Any], Proxy]:
    def method(self: Proxy, other: Any) -> Proxy:
        args = [other, self]
        proxy = self._core.add_op(op, args, SOURCE_FINDER)
        return _graph_of(self).add(op, _EMPTY, args) if proxy is None else proxy

    return method


def _unary(op: Callable[[Any], Any]) -> Callable[[Proxy], Proxy]:
    def method(self: Proxy) -> Proxy:
        args = [self]
        proxy = self._core.add_op(op, args, SOURCE_FINDER)
        return _graph_of(self).add(op, _EMPTY, args) if proxy is None else proxy

    return method


#: Operator tables: dunder stem -> operator function (also used by ``SavedProxy``).
BINARY_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "matmul": operator.matmul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
}
COMPARISON_OPERATORS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
UNARY_OPERATORS: dict[str, Callable[[Any], Any]] = {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": operator.abs,
    "invert": operator.invert,
}

for _name, _op in {**BINARY_OPERATORS, **COMPARISON_OPERATORS}.items():
    setattr(Proxy, f"__{_name}__", _binary(_op))
for _name, _op in BINARY_OPERATORS.items():
    setattr(Proxy, f"__r{_name}__", _reflected(_op))
for _name, _unary_op in UNARY_OPERATORS.items():
    setattr(Proxy, f"__{_name}__", _unary(_unary_op))


def proxy_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a function torch does not route through ``__torch_function__`` (``torch.arange``,
    ``torch.full``, plain Python functions): called with any proxy among its arguments (at any
    depth) it adds a node and returns its proxy; otherwise it just calls ``fn``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if next(iter_instances((args, kwargs), Proxy), None) is None:
            return fn(*args, **kwargs)
        owner = _owning_proxy((args, kwargs), fn)
        return _graph_of(owner).add(fn, _EMPTY, list(args), kwargs)

    return wrapped
