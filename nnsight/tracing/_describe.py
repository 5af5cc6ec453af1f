"""Short descriptions of proxy values and nodes for messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .Node import Node


def describe(value: Any) -> str:
    """Short description of a proxy value for messages: shapes, never tensor contents."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device={value.device})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(item) for item in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


#: Functions that spell an ``argument`` node's key as the user wrote it (the layer that makes
#: the keys registers one: ``.transformer.h.0.output.0`` is ``model.transformer.h[0].output``),
#: returning None for keys that are not theirs.
ARGUMENT_SPELLERS: list[Callable[[str], str | None]] = []


def describe_node(node: Node) -> str:
    """How the user wrote ``node``, for messages: a module value as its envoy
    (``model.transformer.h[0].output``), a gradient as ``.grad of`` that, anything else by its
    node name (``'getitem_0'``), which the message pairs with the line that made it."""
    kind = node._core.kind(node.id)
    if kind == "argument" and node.args and isinstance(node.args[0], str):
        for spell in ARGUMENT_SPELLERS:
            spelled = spell(node.args[0])
            if spelled is not None:
                return spelled
    if kind == "grad" and node.args and hasattr(node.args[0], "_core"):
        return f".grad of {describe_node(node.args[0])}"
    return f"'{node.name}'"
