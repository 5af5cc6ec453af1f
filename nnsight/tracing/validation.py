"""Trace-time checking: running a node's target on fake tensors to learn its result's shape.

One ``FakeTensorMode`` is made per graph, the first time it validates, and reused for every node.
Real tensors among the arguments (weights, constants) are fakified by the mode
(``allow_non_fake_inputs``), so validation never reads or writes real data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedFakeTensorException,
    UnsupportedOperatorException,
)

#: Failures that say "fake tensors cannot tell" rather than "this op is wrong": the node is
#: kept, with an unknown proxy value.
_UNKNOWABLE = (
    DataDependentOutputException,
    DynamicOutputShapeException,
    UnsupportedFakeTensorException,
    UnsupportedOperatorException,
)


class FakeRunner:
    """Runs callables under one lazily made ``FakeTensorMode``."""

    __slots__ = ("_mode",)

    def __init__(self) -> None:
        self._mode: FakeTensorMode | None = None

    @property
    def mode(self) -> FakeTensorMode:
        if self._mode is None:
            self._mode = FakeTensorMode(allow_non_fake_inputs=True)
        return self._mode

    def run(self, target: Any, args: list[Any], kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """``(True, result)`` of ``target(*args, **kwargs)`` under the fake mode, or
        ``(False, None)`` when fake tensors cannot know the result (data-dependent shapes).
        Any other exception propagates: it is a real error in the traced code."""
        try:
            with self.mode:
                return True, target(*args, **kwargs)
        except _UNKNOWABLE:
            return False, None
        except RuntimeError as err:
            # Ops that need real data (`.item()`, `.tolist()`) raise plain RuntimeErrors that
            # mention data dependence.
            if "data-dependent" in str(err) or "data dependent" in str(err):
                return False, None
            raise


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
