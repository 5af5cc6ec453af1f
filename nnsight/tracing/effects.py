"""Which nodes have an effect of their own, for dead-code elimination.

A node is kept when it has an effect, or when a kept node needs its value. Effects, decided
conservatively (when unsure, a node is kept):
    * ``null`` (``.save()``) and ``swap`` nodes;
    * in-place ops: a name ending in ``_``, ``operator.setitem``/``setattr`` and the other
      in-place operators, and any call with an ``out=`` argument;
    * calls through a proxy (``proxy(...)``, e.g. ``loss.backward()``), method-name targets,
      user functions and modules: they may do anything;
    * ``torch`` functions that act on the world rather than return a value (``backward``,
      ``autograd.grad``, ``register_hook``, ``save``, seeding, ``torch.distributed``...).

Pure ``torch`` functions, tensor methods, ``operator`` functions and ``getattr`` are effect-free;
so are ``argument`` and ``grad`` nodes, which run only for the nodes that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .fake_cache import pure_target
from .Proxy import proxy_call

if TYPE_CHECKING:
    from .Node import Node

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
    if isinstance(target, str):
        return target not in ("argument", "grad")
    if target is proxy_call or not pure_target(target) or "out" in node.kwargs:
        return True
    return _acts(target)


def _acts(target: Any) -> bool:
    name = getattr(target, "__name__", None)
    if name in _ACTING_NAMES:
        return True
    module = getattr(target, "__module__", None)
    return isinstance(module, str) and module.startswith(_ACTING_MODULES)
