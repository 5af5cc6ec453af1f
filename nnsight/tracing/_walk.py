"""Walking the nested argument structures of nodes: lists, tuples, dicts and slices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def map_structure(obj: Any, fn: Callable[[Any], Any], types: type | tuple[type, ...]) -> Any:
    """Returns a copy of ``obj`` with every instance of ``types`` replaced by ``fn(instance)``.

    Recurses into lists, tuples (named tuples keep their type), dicts and slices. Anything else
    is returned as it is.
    """
    if isinstance(obj, types):
        return fn(obj)
    cls = type(obj)
    if cls is list:
        return [map_structure(item, fn, types) for item in obj]
    if cls is tuple:
        return tuple(map_structure(item, fn, types) for item in obj)
    if cls is dict:
        return {key: map_structure(item, fn, types) for key, item in obj.items()}
    if cls is slice:
        return slice(
            map_structure(obj.start, fn, types),
            map_structure(obj.stop, fn, types),
            map_structure(obj.step, fn, types),
        )
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return cls(*(map_structure(item, fn, types) for item in obj))
    if isinstance(obj, list):
        return cls(map_structure(item, fn, types) for item in obj)
    if isinstance(obj, dict):
        return cls((key, map_structure(item, fn, types)) for key, item in obj.items())
    return obj


def iter_instances(obj: Any, types: type | tuple[type, ...]) -> Iterator[Any]:
    """Yields every instance of ``types`` inside ``obj``, depth first, in argument order."""
    if isinstance(obj, types):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from iter_instances(item, types)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from iter_instances(item, types)
    elif isinstance(obj, slice):
        yield from iter_instances((obj.start, obj.stop, obj.step), types)


def first_instance(obj: Any, types: type | tuple[type, ...]) -> Any | None:
    """The first instance of ``types`` inside ``obj``, or None."""
    return next(iter_instances(obj, types), None)
