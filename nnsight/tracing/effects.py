"""Which nodes have an effect of their own, for dead-code elimination.

A node is kept when it has an effect, or when a kept node needs its value. Effects, decided
conservatively (when unsure, a node is kept):
    * ``null`` (``.save()``) and ``swap`` nodes;
    * in-place ops: a name ending in ``_``, ``operator.setitem``/``setattr`` and the other
      in-place operators, and any call with an ``out=`` argument;
    * calls through a proxy (``proxy(...)``), method-name targets, user functions and modules:
      they may do anything. Except a method call ``proxy.name(...)`` where ``name`` is a
      non-in-place ``torch.Tensor`` method (``.sum()``, ``.softmax(-1)``): effect-free, as the
      same call through ``torch`` would be. ``loss.backward()`` is an effect;
    * ``torch`` functions that act on the world rather than return a value (``backward``,
      ``autograd.grad``, ``register_hook``, ``save``, seeding, ``torch.distributed``...).

Pure ``torch`` functions, tensor methods, ``operator`` functions and ``getattr`` are effect-free;
so are ``argument`` and ``grad`` nodes, which run only for the nodes that use them.
"""

from __future__ import annotations

from typing import Any

import torch

from .fake_cache import pure_target
from .Node import Node
from .Proxy import proxy_call

#: Reserved targets that run only for the nodes using them.
_NO_EFFECT_TARGETS = frozenset({"argument", "grad"})

#: Names of torch functions and tensor methods that act on something besides their result.
_ACTING_NAMES = frozenset(
    {
        "backward",
        "grad",
        "register_hook",
        "register_post_accumulate_grad_hook",
        "retain_grad",
        "save",
        "manual_seed",
        "seed",
        "set_grad_enabled",
        "synchronize",
        "record_stream",
        "print",
    }
)
_ACTING_MODULES = ("torch.distributed", "torch.cuda", "torch.random", "torch.serialization")


def has_effect(node: Node) -> bool:
    """Whether ``node`` must run even when no kept node uses its value."""
    target = node.target
    if target is proxy_call:
        return "out" in node.kwargs or not _pure_method_call(node)
    return target_has_effect(target, not isinstance(target, str) and "out" in node.kwargs)


def target_has_effect(target: Any, passes_out: bool) -> bool:
    """``has_effect`` for a node of any target but ``proxy_call`` (whose answer depends on the
    method it calls), from its target and whether it passes ``out=``."""
    if isinstance(target, str):
        return target not in _NO_EFFECT_TARGETS
    if passes_out:
        return True
    try:
        if target in _PURE_TARGETS:
            return False
    except TypeError:  # unhashable target
        pass
    if not pure_target(target) or _acts(target):
        return True
    if len(_PURE_TARGETS) < 4096:
        _PURE_TARGETS.add(target)
    return False


#: Effect-free targets seen so far: torch and operator functions and tensor methods, which
#: live as long as their modules anyway (targets with effects, which may be user closures
#: holding tensors, are never kept).
_PURE_TARGETS: set[Any] = set()


def _pure_method_call(node: Node) -> bool:
    """Whether a ``proxy_call`` node calls a non-in-place tensor method by name."""
    callee = node.args[0] if node.args else None
    if not isinstance(callee, Node) or callee.target is not getattr or len(callee.args) < 2:
        return False
    name = callee.args[1]
    if not isinstance(name, str) or name.endswith("_") or name in _ACTING_NAMES:
        return False
    return callable(getattr(torch.Tensor, name, None))


def _acts(target: Any) -> bool:
    name = getattr(target, "__name__", None)
    if name in _ACTING_NAMES:
        return True
    module = getattr(target, "__module__", None)
    return isinstance(module, str) and module.startswith(_ACTING_MODULES)
