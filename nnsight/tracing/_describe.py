"""Short descriptions of proxy values for messages."""

from __future__ import annotations

from typing import Any

import torch


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
