"""Which targets a graph message may name, and the guards they run under on the receiving side.

A target travels as a name, never as code. Reading resolves names only against this
allowlist:

* ``torch.*``: the functions and ``Tensor`` methods ``__torch_function__`` can intercept
  (``torch.overrides.get_overridable_functions()``: tensor maths, not ``torch.load`` or
  ``torch.save``), minus names starting with ``_`` other than ``Tensor``'s operator dunders;
* ``operator.*``: arithmetic, comparisons, ``getitem`` and ``setitem``;
* ``builtins.getattr``, ``builtins.setattr``, ``builtins.len``; ``nnsight.proxy_call`` (calling
  what a proxy holds) and nnsight's own pure helpers (``fake_cache.pure``);
* ``module:<path>``: a submodule of the receiving model, which must exist there;
* the reserved targets (``argument``, ``swap``, ``null``, ``grad``) and method names of
  ``Tensor`` (``"sum"``), as string targets.

A name alone cannot make a graph safe (``getattr`` can walk to anything), so the receiving side
runs some targets under guards, checked when the node runs:

* ``getattr`` refuses names starting with ``_`` and hands out bound methods only of tensors
  (a module's ``save_pretrained`` or ``state_dict`` is refused), and of those no in-place method
  of a protected tensor;
* ``setattr`` and ``setitem`` act only on tensors that are not protected, in-place ``torch``
  functions and ``out=`` likewise;

where *protected* means sharing storage with a parameter or buffer of the receiving model: a
request may edit activations, never the model other requests run on.
"""

from __future__ import annotations

import builtins
import functools
import operator
import types
from collections.abc import Callable
from typing import Any

import torch

from ..errors import SerializationError
from ..intervention.envoy import ModuleCall
from ..intervention.session import earlier_value
from ..intervention.stopping import stop_run
from ..tracing.fake_cache import PURE_FUNCTIONS
from ..tracing.Node import RESERVED_TARGETS
from ..tracing.Proxy import proxy_call

#: Operator functions a graph may name (in-place operators are never traced).
_OPERATORS = (
    "add sub mul matmul truediv floordiv mod pow lshift rshift and_ or_ xor eq ne lt le gt ge "
    "neg pos abs invert getitem setitem"
).split()

#: Tensor dunders a graph may name: a real tensor on the left of an operator meets a proxy
#: through ``__torch_function__`` with these as the target.
_TENSOR_DUNDERS = frozenset(
    f"__{stem}__"
    for stem in (
        "add radd sub rsub mul rmul matmul rmatmul truediv rtruediv div rdiv floordiv "
        "rfloordiv mod rmod pow rpow and rand or ror xor rxor lshift rlshift rshift rrshift "
        "eq ne lt le gt ge neg pos abs invert getitem setitem len"
    ).split()
)

_MODULE = "module:"


@functools.cache
def _tables() -> tuple[dict[str, Any], dict[int, str]]:
    """name -> target and id(target) -> name, built once."""
    by_name: dict[str, Any] = {}
    for namespace, functions in torch.overrides.get_overridable_functions().items():
        if isinstance(namespace, types.ModuleType):
            prefix = namespace.__name__
        elif namespace is torch.Tensor:
            prefix = "torch.Tensor"
        else:
            continue
        for function in functions:
            name = getattr(function, "__name__", None)
            if not isinstance(name, str) or getattr(namespace, name, None) is not function:
                continue
            if name.startswith("_") and not (namespace is torch.Tensor and name in _TENSOR_DUNDERS):
                continue
            by_name[f"{prefix}.{name}"] = function
    for name in _OPERATORS:
        by_name[f"operator.{name}"] = getattr(operator, name)
    for name in ("getattr", "setattr", "len"):
        by_name[f"builtins.{name}"] = getattr(builtins, name)
    by_name["nnsight.proxy_call"] = proxy_call
    by_name["nnsight.stop"] = stop_run  # tracer.stop(): ends the run, touches nothing
    by_name["nnsight.earlier_value"] = earlier_value  # a session's earlier value, by numbers
    by_name.update(PURE_FUNCTIONS)
    return by_name, {id(target): name for name, target in by_name.items()}


@functools.cache
def tensor_method_names() -> frozenset[str]:
    """Names of ``Tensor`` methods a string target or a guarded ``getattr`` may call."""
    names = {name.rsplit(".", 1)[1] for name in _tables()[0] if name.startswith("torch.Tensor.")}
    return frozenset(name for name in names if not name.startswith("_"))


def name_of(target: Any, module_paths: dict[int, str]) -> str | None:
    """The wire name of ``target``, or None when it has none (a user's function).

    ``module_paths`` maps ``id(module)`` to its path in the graph's root module.
    """
    if isinstance(target, str):
        if target in RESERVED_TARGETS or target in tensor_method_names():
            return target
        return None
    if isinstance(target, ModuleCall):
        return _MODULE + target.envoy.path[1:]
    if isinstance(target, torch.nn.Module):
        path = module_paths.get(id(target))
        return None if path is None else _MODULE + path
    pure_name = getattr(target, "__nnsight_pure__", False) and (
        f"{target.__module__}.{target.__qualname__}"
    )
    if pure_name and PURE_FUNCTIONS.get(pure_name) is target:
        return pure_name
    try:
        return _tables()[1].get(id(target))
    except TypeError:
        return None


def resolve(name: Any, model: torch.nn.Module | None, guards: Guards) -> Any:
    """The target a wire name stands for on the receiving side, guarded where it must be.
    Raises ``SerializationError`` for any name outside the allowlist."""
    if not isinstance(name, str):
        raise SerializationError(f"a target must be a name (a str), got {type(name).__name__}")
    if name in RESERVED_TARGETS:
        return name
    if name.startswith(_MODULE):
        path = name[len(_MODULE) :]
        if model is None:
            raise SerializationError(f"target {name!r} names a module, but there is no model")
        try:
            return model.get_submodule(path) if path else model
        except AttributeError:
            raise SerializationError(
                f"target {name!r}: the model ({type(model).__name__}) has no module at {path!r}"
            ) from None
    if name in tensor_method_names():
        return guards.method_name(name)
    target = _tables()[0].get(name)
    if target is None:
        raise SerializationError(f"target {name!r} is not one a graph message may name")
    return guards.wrap(name, target)


class Guards:
    """The checks the receiving side's targets run under (see the module docs)."""

    def __init__(self, model: torch.nn.Module | None) -> None:
        self._storages: set[int] = set()
        if model is not None:
            for tensor in [*model.parameters(), *model.buffers()]:
                pointer = _storage(tensor)
                if pointer:
                    self._storages.add(pointer)

    def protected(self, value: Any) -> bool:
        """Whether ``value`` is a tensor sharing storage with the model's weights."""
        return isinstance(value, torch.Tensor) and _storage(value) in self._storages

    def _refuse(self, what: str) -> None:
        raise PermissionError(f"a remote graph may not {what}")

    def wrap(self, name: str, target: Any) -> Any:
        if target is getattr:
            return self.getattr
        if target is setattr:
            return self.setattr
        if target is operator.setitem or name == "torch.Tensor.__setitem__":
            return self.setitem
        if name.rsplit(".", 1)[1].endswith("_"):
            return self.in_place(name, target)
        return target

    def method_name(self, name: str) -> Any:
        """A string target (a ``Tensor`` method of the first argument), guarded."""
        if name.endswith("_"):
            return self.in_place(name, lambda obj, *a, **k: getattr(obj, name)(*a, **k))
        return name

    def in_place(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        """``target`` refusing to run with a protected tensor as its first argument or its
        ``out=`` (in-place functions, and calls passing ``out=``)."""
        guards = self

        @functools.wraps(target)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if (args and guards.protected(args[0])) or guards.protected(kwargs.get("out")):
                guards._refuse(f"change the model's weights in place ({name})")
            return target(*args, **kwargs)

        return guarded

    def getattr(self, obj: Any, name: str) -> Any:
        if not isinstance(name, str) or name.startswith("_"):
            self._refuse(f"read the attribute {name!r}")
        value = builtins.getattr(obj, name)
        if callable(value) and not isinstance(value, torch.nn.Module):
            if not isinstance(obj, torch.Tensor) or name not in tensor_method_names():
                self._refuse(f"call {type(obj).__name__}.{name}")
            if name.endswith("_") and self.protected(obj):
                self._refuse(f"change the model's weights in place (.{name})")
        return value

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        if not isinstance(obj, torch.Tensor) or self.protected(obj):
            self._refuse(f"set attributes of {type(obj).__name__} (only of activations)")
        if not isinstance(name, str) or name.startswith("_"):
            self._refuse(f"set the attribute {name!r}")
        builtins.setattr(obj, name, value)

    def setitem(self, obj: Any, key: Any, value: Any) -> None:
        if not isinstance(obj, torch.Tensor) or self.protected(obj):
            self._refuse(f"assign into {type(obj).__name__} (only into activations)")
        obj[key] = value


# Effect-free as getattr is (dead-code elimination may drop it), but not a name a message can
# use: it is not registered with `pure`.
Guards.getattr.__nnsight_pure__ = True  # type: ignore[attr-defined]


def _storage(tensor: torch.Tensor) -> int:
    try:
        return int(tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # meta and fake tensors have none
        return 0
