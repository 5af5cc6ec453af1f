"""nnsight 0.2's utilities, which its tutorials import (``from nnsight import util``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def apply(
    data: Any, fn: Callable[[Any], Any], cls: type | tuple[type, ...], inplace: bool = False
) -> Any:
    """``data`` with every instance of ``cls`` replaced by ``fn(instance)``, through lists,
    tuples, dicts and slices (nnsight 0.2's ``util.apply``; ``inplace`` changes lists and
    dicts in place). The IOI tutorial maps saved proxies to numbers with it."""
    if isinstance(data, cls):
        return fn(data)
    kind = type(data)
    if kind is list:
        if inplace:
            data[:] = [apply(item, fn, cls, inplace) for item in data]
            return data
        return [apply(item, fn, cls, inplace) for item in data]
    if kind is tuple:
        return tuple(apply(item, fn, cls, inplace) for item in data)
    if kind is dict:
        if inplace:
            for key, value in data.items():
                data[key] = apply(value, fn, cls, inplace)
            return data
        return {key: apply(value, fn, cls, inplace) for key, value in data.items()}
    if kind is slice:
        return slice(
            apply(data.start, fn, cls, inplace),
            apply(data.stop, fn, cls, inplace),
            apply(data.step, fn, cls, inplace),
        )
    return data


def fetch_attr(obj: Any, target: str) -> Any:
    """The attribute at the dotted path ``target`` of ``obj`` (``"transformer.h.1"``; ``""`` is
    ``obj`` itself)."""
    for atom in target.split("."):
        if atom:
            obj = getattr(obj, atom)
    return obj


class WrapperModule(torch.nn.Module):
    """Passes its input through (one argument: that argument), so hooks can see it: the
    ``generator`` of a LanguageModel is called with what ``generate`` returned."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if len(args) == 1 else args
