"""Proxies of a model trace: ``.grad``, ``.save()`` bookkeeping, and what a saved proxy becomes
once its trace has run."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from ..tracing import Proxy
from ..tracing._source import SOURCE_FINDER, user_source
from ..tracing._walk import map_structure
from ..tracing.Node import not_saved_error
from ..tracing.Proxy import BINARY_OPERATORS, COMPARISON_OPERATORS, UNARY_OPERATORS

if TYPE_CHECKING:
    from .graph import InterventionGraph

_EMPTY = inspect._empty


class InterventionProxy(Proxy):
    """A :class:`~nnsight.tracing.Proxy` with gradients and saving that outlives the trace.

    * ``proxy.grad`` is the gradient flowing back into this value (a ``grad`` node: a hook on
      the tensor, set when backward reaches it); ``proxy.grad = g`` replaces that gradient.
    * ``proxy.save()`` keeps the value; after the trace the proxy behaves like its value
      (:class:`SavedProxy`).
    """

    __slots__ = ()

    def save(self) -> InterventionProxy:
        # The core adds the `null` node and lists the proxy in `graph.saved` in one call; it
        # declines (a proxy of a finished graph) and `Graph.add` raises what it raises.
        if not self._core.add_save(self, SOURCE_FINDER):
            graph = self._graph()
            graph.add("null", None, [self])
            graph.saved.append(self)
        return self

    def _graph(self) -> InterventionGraph:
        graph = self._core.graph()  # leaves a node Graph.add has not made unmade
        if graph is None:  # its trace is over and gone: say so as any use of it would
            node = self.node
            if not node.done():
                raise not_saved_error(node, user_source())
            return node.graph  # type: ignore[return-value]  # raises ReferenceError
        return graph  # type: ignore[no-any-return]

    @property
    def grad(self) -> InterventionProxy:
        """The gradient of this value, as a proxy (a ``grad`` node, see ``Graph.grad_of``)."""
        return self._graph().grad_of(self)  # type: ignore[return-value]

    def __getitem__(self, key: Any) -> Proxy:
        # An item of a tuple or list whose proxy value is already known (an unpacked module
        # output) keeps a known proxy value without validation, so `*rest` unpacks.
        node = self.node
        known = node._proxy_value
        if type(known) in (tuple, list) and type(key) in (int, slice):
            value: Any
            try:
                value = known[key]
            except IndexError:
                value = _EMPTY
            return node.graph.add(operator.getitem, value, [node, key])
        return super().__getitem__(key)

    @property
    def shape(self) -> Any:
        """The shape (``torch.Size``), known while tracing: from the scan for module values,
        computed on fake tensors on first use for values derived from them. A tuple or list
        value gives the same structure of shapes (nnsight 0.2). Traced like any attribute
        when the value cannot be known (it depends on data or on a user function)."""
        return self._static_attribute("shape")

    @property
    def dtype(self) -> Any:
        """The dtype, known while tracing (see ``shape``)."""
        return self._static_attribute("dtype")

    @property
    def device(self) -> Any:
        """The device, known while tracing (see ``shape``)."""
        return self._static_attribute("device")

    @property
    def ndim(self) -> Any:
        """The number of dimensions, known while tracing (see ``shape``)."""
        return self._static_attribute("ndim")

    def _static_attribute(self, name: str) -> Any:
        value = self._known_value()
        if value is not _EMPTY:
            if isinstance(value, torch.Tensor):
                return getattr(value, name)
            if type(value) in (tuple, list, dict):
                return map_structure(value, lambda t: getattr(t, name), torch.Tensor)
            if hasattr(value, name):
                return getattr(value, name)
        return super().__getattr__(name)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "grad":
            self._graph().set_grad(self, value)
        else:
            super().__setattr__(key, value)


def _value(item: Any) -> Any:
    return item.value if isinstance(item, SavedProxy) else item


def _unwrap(values: Any) -> Any:
    return map_structure(values, _value, SavedProxy)


class SavedProxy(InterventionProxy):
    """A saved proxy after its trace has run: every operation applies to its value.

    ``saved + 1``, ``saved[0]``, ``saved.shape``, ``torch.sum(saved)``, ``len(saved)``,
    iteration and printing act on ``saved.value``; use ``.value`` for the value itself. Used
    in a later trace, it is a constant.

    ``isinstance`` sees both: a saved tensor is an instance of ``SavedProxy`` (its type) and of
    ``torch.Tensor`` (its ``__class__``, the value's type, as ``unittest.mock`` objects do), so
    libraries that check for a tensor (``tokenizer.batch_decode(saved)`` in 0.2's tutorials)
    take it. ``type(saved)`` is still ``SavedProxy``.
    """

    __slots__ = ()

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        value = self._core.value(self._id)
        return SavedProxy if value is _EMPTY else type(value)

    def __getattr__(self, key: str) -> Any:
        if key == "node":  # a node Graph.add left unmade: Proxy makes it
            return super().__getattr__(key)
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        return getattr(self.value, key)

    def __setattr__(self, key: str, value: Any) -> None:
        setattr(self.value, key, _value(value))

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    device = property(lambda self: self.value.device)
    ndim = property(lambda self: self.value.ndim)

    def __getitem__(self, key: Any) -> Any:
        return self.value[_unwrap(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.value[_unwrap(key)] = _value(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value(*_unwrap(args), **_unwrap(kwargs))

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __contains__(self, item: Any) -> bool:
        return _value(item) in self.value

    def __index__(self) -> int:
        return operator.index(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value.__array__(*args, **kwargs)

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def __torch_function__(
        cls,
        orig_method: Callable[..., Any],
        types: Any,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        return orig_method(*_unwrap(tuple(args)), **_unwrap(kwargs or {}))


def _on_value(op: Callable[[Any, Any], Any], reflected: bool) -> Callable[[SavedProxy, Any], Any]:
    if reflected:
        return lambda self, other: op(_value(other), self.value)
    return lambda self, other: op(self.value, _value(other))


for _name, _op in BINARY_OPERATORS.items():
    setattr(SavedProxy, f"__{_name}__", _on_value(_op, reflected=False))
    setattr(SavedProxy, f"__r{_name}__", _on_value(_op, reflected=True))
for _name, _op in COMPARISON_OPERATORS.items():
    setattr(SavedProxy, f"__{_name}__", _on_value(_op, reflected=False))


def _unary_on_value(op: Callable[[Any], Any]) -> Callable[[SavedProxy], Any]:
    return lambda self: op(self.value)


for _name, _unary_op in UNARY_OPERATORS.items():
    setattr(SavedProxy, f"__{_name}__", _unary_on_value(_unary_op))
SavedProxy.__hash__ = object.__hash__  # type: ignore[assignment,method-assign]
