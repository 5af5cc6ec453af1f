"""A cache of fake-tensor results, keyed by the target and the metadata of its arguments.

Running one op under ``FakeTensorMode`` costs hundreds of microseconds (torch's fake dispatch
is Python), yet traces repeat the same op on the same shapes all the time. For targets whose
result metadata depends only on their arguments' metadata, the first result's metadata is kept
and later calls get a :class:`LazyFake` holding it, built into a *new* fake tensor only when
something reads it: nodes never share a proxy value, so an in-place op traced on one can never
change another's.

What is cached, and what is not (choices, made for safety):
    * targets: ``torch`` functions (``torch.*``, ``torch.nn.functional.*``), tensor methods,
      ``operator`` functions, ``getattr``, ``len``, and calls of a fake tensor's bound method
      (``proxy.sum(...)``). Never user functions or modules, whose results may depend on state.
    * never in-place ops (a name ending in ``_``, ``setitem``, ``setattr``, ``operator.i*``):
      they change their input's metadata, which a cache hit would skip.
    * arguments: fake tensors (by shape, stride, dtype, device, layout, requires_grad and
      storage offset), immutable scalars, ``torch.Size``/dtype/device, and lists, tuples, dicts
      and slices of these. Anything else makes the call uncached.
    * results: one strided tensor with storage offset 0 (rebuilt as a leaf fake tensor with the
      same shape, strides, dtype, device and ``requires_grad``), or an immutable value.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from .Proxy import proxy_call

_Fn = TypeVar("_Fn", bound=Callable[..., Any])

_TENSOR = object()
_BOUND = object()
_IMMUTABLE = frozenset(
    {
        int,
        float,
        bool,
        complex,
        str,
        bytes,
        type(None),
        type(Ellipsis),
        torch.dtype,
        torch.device,
        torch.layout,
        torch.memory_format,
    }
)
_IN_PLACE_OPERATORS = frozenset(
    {operator.setitem, operator.delitem, setattr, delattr}
    | {
        getattr(operator, name)
        for name in (
            "iadd",
            "iand",
            "iconcat",
            "ifloordiv",
            "ilshift",
            "imatmul",
            "imod",
            "imul",
            "ior",
            "ipow",
            "irshift",
            "isub",
            "itruediv",
            "ixor",
        )
    }
)
_PLAIN_BUILTINS = frozenset({getattr, len, proxy_call})
_TENSOR_BASE = torch._C.TensorBase

#: Entries kept per graph before the cache starts over.
MAX_ENTRIES = 4096


class _Uncacheable(Exception):
    pass


def _tensor_meta(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What a cached tensor result keeps: shape, strides, dtype, device, requires_grad."""
    return (tuple(tensor.shape), tensor.stride(), tensor.dtype, tensor.device, tensor.requires_grad)


def _tensor_key(
    meta: tuple[Any, ...], layout: torch.layout, storage_offset: int
) -> tuple[Any, ...]:
    """The argument key of a tensor: one spelling for real fakes and :class:`LazyFake`s alike,
    so a chain of cached ops keeps hitting the cache."""
    return (_TENSOR, *meta, layout, storage_offset)


class LazyValue:
    """A proxy value computed only when something reads it: ``Node.proxy_value`` calls
    :meth:`materialize` on first read and keeps the result. Layers above tracing subclass it
    (the model scan's per-call values)."""

    __slots__ = ()

    def materialize(self) -> Any:
        raise NotImplementedError


class LazyFake(LazyValue):
    """A cached fake tensor not built yet: its metadata, and its cache key as an argument.

    Nodes hold one as their proxy value after a cache hit; ``Node.proxy_value`` turns it into
    a real ``FakeTensor`` (:meth:`materialize`) the first time anything reads it, and keeps
    that. A chain of cached ops therefore builds no fake tensor at all.
    """

    __slots__ = ("device", "dtype", "key", "mode", "requires_grad", "shape", "stride")

    def __init__(self, kept: tuple[Any, ...], mode: FakeTensorMode) -> None:
        meta = kept[1:]
        self.shape, self.stride, self.dtype, self.device, self.requires_grad = meta
        self.mode = mode
        self.key = _tensor_key(meta, torch.strided, 0)

    def materialize(self) -> FakeTensor:
        meta = torch.empty_strided(
            self.shape,
            self.stride,
            dtype=self.dtype,
            device="meta",
            requires_grad=self.requires_grad,
        )
        return FakeTensor(self.mode, meta, self.device)


def _in_place(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__")


#: Every function marked :func:`pure`, by ``module.qualname`` (the graph wire format names
#: them so, and resolves only names found here).
PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def pure(fn: _Fn) -> _Fn:
    """Marks a function of nnsight's own as pure: its result's metadata depends on its
    arguments' alone, and it does nothing else. Its nodes are then treated as those of a
    ``torch`` function: cached, effect-free, and run on fake tensors when asked."""
    fn.__nnsight_pure__ = True  # type: ignore[attr-defined]
    PURE_FUNCTIONS[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def pure_target(target: Any) -> bool:
    """Whether ``target``'s result metadata depends on its arguments' metadata alone."""
    try:
        if target in _PLAIN_BUILTINS:
            return True
        if target in _IN_PLACE_OPERATORS:
            return False
    except TypeError:  # unhashable target
        return False
    if getattr(target, "__nnsight_pure__", False) is True:
        return True
    name = getattr(target, "__name__", "")
    if not isinstance(name, str) or _in_place(name) or isinstance(target, torch.nn.Module):
        return False
    module = getattr(target, "__module__", None)
    if module in ("_operator", "operator"):
        return True
    if isinstance(module, str) and (module == "torch" or module.startswith("torch.")):
        return True
    return getattr(target, "__objclass__", None) is _TENSOR_BASE


def _arg_key(value: Any) -> Any:
    cls = type(value)
    if cls in _IMMUTABLE:
        return (cls, value)
    if cls is LazyFake:
        return value.key
    if isinstance(value, torch.Tensor):
        return _tensor_key(_tensor_meta(value), value.layout, int(value.storage_offset()))
    if cls is tuple or cls is list or cls is torch.Size:
        return (cls, tuple(_arg_key(item) for item in value))
    if cls is dict:
        return (cls, tuple((key, _arg_key(item)) for key, item in value.items()))
    if cls is slice:
        return (cls, _arg_key(value.start), _arg_key(value.stop), _arg_key(value.step))
    owner = getattr(value, "__self__", None)
    if isinstance(owner, torch.Tensor) and callable(value):
        name = getattr(value, "__name__", "")
        if isinstance(name, str) and not _in_place(name):
            return (_BOUND, name, _arg_key(owner))
    raise _Uncacheable


def cache_key(target: Any, args: list[Any], kwargs: dict[str, Any]) -> Any | None:
    """The cache key of this call, or None when it must not be cached."""
    if not pure_target(target):
        return None
    try:
        return (
            target,
            tuple(_arg_key(arg) for arg in args),
            tuple((key, _arg_key(value)) for key, value in kwargs.items()),
        )
    except _Uncacheable:
        return None


def holds_lazy(values: Any) -> bool:
    """Whether a :class:`LazyFake` sits anywhere in ``values`` (lists, tuples, dicts)."""
    if type(values) is LazyFake:
        return True
    if isinstance(values, (list, tuple)):
        return any(holds_lazy(item) for item in values)
    if isinstance(values, dict):
        return any(holds_lazy(item) for item in values.values())
    return False


def snapshot(value: Any) -> tuple[Any, ...] | None:
    """What to keep of a fake result to rebuild it, or None when it is not cacheable."""
    if isinstance(value, FakeTensor):
        if value.layout is not torch.strided or value.storage_offset() != 0:
            return None
        return (_TENSOR, *_tensor_meta(value))
    try:
        _arg_key(value)
    except _Uncacheable:
        return None
    if _holds_tensor(value):  # a tuple of fakes (torch.split) would be shared between nodes
        return None
    return (None, value)


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_tensor(item) for item in value.values())
    return False


def rebuild(kept: tuple[Any, ...], mode: FakeTensorMode) -> Any:
    """The result for a cache hit: a :class:`LazyFake`, or the immutable value itself."""
    return LazyFake(kept, mode) if kept[0] is _TENSOR else kept[1]
