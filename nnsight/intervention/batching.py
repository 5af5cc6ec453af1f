"""Batching the inputs of several invokes into one forward pass, and taking each invoke's rows
back out of (or putting them into) the activations of that pass.

Every invoke owns a contiguous block of rows of dimension 0, ``[start, start + size)``. A tensor
whose first dimension equals the whole batch is treated as batched; anything else (weights,
position tables, caches, scalars) is shared by every invoke and passed through untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from ..errors import TracingError


class Rows(NamedTuple):
    """The rows of the batch one invoke owns."""

    start: int
    size: int
    total: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.size == self.total


def rebuild_like(like: type, items: list[Any] | dict[Any, Any]) -> Any:
    """A container of type ``like`` holding ``items``: named tuples by position, dataclass
    dicts (``transformers``' ``ModelOutput``) by keyword, other dicts from their items; a
    dict type that cannot be rebuilt becomes a plain dict."""
    if isinstance(items, dict):
        if like is dict:
            return items
        try:
            if dataclasses.is_dataclass(like):
                return like(**items)
            return like(items)
        except TypeError:
            return items
    if like is list or like is tuple:
        return like(items)
    if issubclass(like, tuple) and hasattr(like, "_fields"):
        return like(*items)
    return like(items)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with every tensor replaced by ``fn(tensor)``, through tuples, lists, dicts and
    model-output classes (``transformers``' ``ModelOutput``, rebuilt with its own type)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return rebuild_like(type(obj), [map_tensors(item, fn) for item in obj])
    if isinstance(obj, dict):
        return rebuild_like(type(obj), {key: map_tensors(v, fn) for key, v in obj.items()})
    return obj


def batch_size_of(inputs: Any) -> int:
    """Rows an invoke's inputs make: the first dimension of their first tensor (1 if none)."""
    first = inputs  # the first leaf: when it is a batched tensor (the common case), that is it
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return first.shape[0]
    found: list[torch.Tensor] = []

    def note(tensor: torch.Tensor) -> torch.Tensor:
        if not found and tensor.dim() > 0:
            found.append(tensor)
        return tensor

    map_tensors(inputs, note)
    return found[0].shape[0] if found else 1


def combine(parts: Sequence[Any]) -> Any:
    """One structure from several of the same shape: tensors concatenated along dimension 0
    (except one tensor object passed by every invoke: that is shared, and kept once), anything
    else required to be equal. Raises TracingError naming what differs."""
    first = parts[0]
    if len(parts) == 1 or all(part is first for part in parts[1:]):
        return first
    if isinstance(first, torch.Tensor):
        if not all(isinstance(p, torch.Tensor) for p in parts):
            raise TracingError("invokes pass a tensor in one place and something else in another")
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise TracingError(
                "the invokes' inputs cannot be batched into one forward pass: their tensors "
                f"differ beyond the batch dimension ({sorted(shapes)}); pad them to one shape"
            )
        return torch.cat(list(parts), dim=0)
    if isinstance(first, (tuple, list)):
        if any(type(p) is not type(first) or len(p) != len(first) for p in parts):
            raise TracingError("the invokes' inputs do not have the same structure")
        items = [combine([p[i] for p in parts]) for i in range(len(first))]
        return rebuild_like(type(first), items)
    if isinstance(first, dict):
        if any(not isinstance(p, dict) or p.keys() != first.keys() for p in parts):
            raise TracingError("the invokes' inputs do not have the same keys")
        return rebuild_like(type(first), {key: combine([p[key] for p in parts]) for key in first})
    if any(p != first for p in parts[1:]):
        raise TracingError(
            f"the invokes' inputs differ in a non-tensor argument ({first!r} vs others); "
            "they must agree to run as one batch"
        )
    return first


def narrow(value: Any, rows: Rows) -> Any:
    """An invoke's view of an activation: its rows of every batched tensor (views, so in-place
    edits reach the live activation)."""
    if rows.whole:
        return value

    def take(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() > 0 and tensor.shape[0] == rows.total:
            return tensor.narrow(0, rows.start, rows.size)
        return tensor

    return map_tensors(value, take)


def splice(original: Any, replacement: Any, rows: Rows, what: str) -> Any:
    """``original`` with the invoke's rows replaced by ``replacement`` (a swap).

    With one invoke the replacement is taken as it is. Otherwise the two structures are walked
    together and each batched tensor is rebuilt with the invoke's rows from the replacement,
    which must have exactly ``rows.size`` rows (nnsight 0.2 silently truncated). ``what``
    names the swap for error messages.
    """
    if rows.whole:
        if (
            isinstance(original, torch.Tensor)
            and isinstance(replacement, torch.Tensor)
            and original.dim() > 0
            and original.shape[0] == rows.total
        ):
            _check_rows(replacement, rows.size, what)
        return replacement
    if isinstance(original, torch.Tensor):
        if original.dim() == 0 or original.shape[0] != rows.total:
            return replacement
        if not isinstance(replacement, torch.Tensor):
            replacement = torch.as_tensor(replacement, dtype=original.dtype)
            replacement = replacement.to(original.device).expand(rows.size, *original.shape[1:])
        _check_rows(replacement, rows.size, what)
        replacement = replacement.to(device=original.device, dtype=original.dtype)
        before = original.narrow(0, 0, rows.start)
        after = original.narrow(0, rows.start + rows.size, rows.total - rows.start - rows.size)
        return torch.cat([before, replacement, after], dim=0)
    if isinstance(original, (tuple, list)) and isinstance(replacement, (tuple, list)):
        if len(original) != len(replacement):
            raise TracingError(
                f"{what}: the new value has {len(replacement)} items where the module gives "
                f"{len(original)}; with several invokes each item must be replaced row-wise"
            )
        spliced = [splice(o, r, rows, what) for o, r in zip(original, replacement, strict=True)]
        return rebuild_like(type(original), spliced)
    if isinstance(original, dict) and isinstance(replacement, dict):
        items = {
            key: splice(value, replacement[key], rows, what) if key in replacement else value
            for key, value in original.items()
        }
        return rebuild_like(type(original), items)
    raise TracingError(
        f"{what}: cannot put a {type(replacement).__name__} in place of the "
        f"{type(original).__name__} this module gives for one invoke's rows"
    )


def _check_rows(tensor: torch.Tensor, size: int, what: str) -> None:
    rows = tensor.shape[0] if tensor.dim() > 0 else None
    if rows != size:
        raise TracingError(
            f"{what}: the new value has batch size {rows} but this invoke has {size} "
            f"row(s) (shape {tuple(tensor.shape)}); it must match (nnsight 0.2 silently "
            "truncated the batch)"
        )


def join_rows(activation: Any, pieces: dict[int, Any], invoke_rows: list[Rows]) -> Any:
    """``activation`` rebuilt from its invokes' rows: ``pieces[start]`` where an invoke has
    one (the very views its nodes saw, so gradients flow back through them), else a fresh
    view of ``activation``. Batched tensors are concatenated; anything else is kept."""
    parts = [
        pieces[rows.start] if rows.start in pieces else narrow(activation, rows)
        for rows in invoke_rows
    ]
    return _concat(activation, parts, invoke_rows[0].total)


def _concat(original: Any, parts: list[Any], total: int) -> Any:
    if isinstance(original, torch.Tensor):
        if original.dim() == 0 or original.shape[0] != total:
            return original
        return torch.cat(parts, dim=0)
    if isinstance(original, (tuple, list)):
        return rebuild_like(
            type(original),
            [_concat(item, [p[i] for p in parts], total) for i, item in enumerate(original)],
        )
    if isinstance(original, dict):
        return rebuild_like(
            type(original),
            {key: _concat(item, [p[key] for p in parts], total) for key, item in original.items()},
        )
    return original
