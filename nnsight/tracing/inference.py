"""Proxy values on demand: a node's fake result, computed only when someone asks for it.

With ``validate=False`` (the default of model traces) nodes are added without running anything,
so a derived proxy (``out.sum(-1)``) has no proxy value. When user code asks for one
(``.shape``, ``.dtype``, ``.device``, ``len()``, unpacking, token indexing), :func:`infer`
runs fake tensors through just the sub-graph the node depends on, oldest node first, and keeps
each result on its node, so a second question costs a lookup. A trace that asks nothing runs
nothing (``Graph._fake.runs`` counts fake runs).

What is run, a choice made for safety: ``torch`` functions, tensor methods, ``operator``
functions and ``getattr`` (:func:`~nnsight.tracing.fake_cache.pure_target`), tensor methods
called through a proxy (``proxy.sum(-1)``) unless in-place, and modules. Never a user's own
function (``tracer.apply(fn, ...)``), which may have effects the user did not mean to run at
trace time: its result, and everything computed from it, stays unknown. A fake run that fails
leaves the value unknown too, with the reason kept (messages quote it); the error itself
surfaces when the graph runs, as it would have without the question.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch

from .fake_cache import pure_target
from .Proxy import proxy_call

if TYPE_CHECKING:
    from .Graph import Graph
    from .Node import Node

_EMPTY = inspect._empty


def fake_safe(target: Any) -> bool:
    """Whether a node of ``target`` may be run on fake tensors when its value is asked for."""
    if isinstance(target, str):  # a method name of the first argument
        return not target.endswith("_")
    if target is proxy_call:  # decided by what it calls (``_safe_callee``)
        return True
    if isinstance(target, torch.nn.Module) or getattr(type(target), "fake_safe", False):
        return True
    return pure_target(target)


def _safe_callee(callee: Any) -> bool:
    """Whether what a ``proxy(...)`` node calls may run on fakes: a module, or a tensor's
    own method that is not in-place."""
    if isinstance(callee, torch.nn.Module):
        return True
    name = getattr(callee, "__name__", "")
    owner = getattr(callee, "__self__", None)
    return isinstance(owner, torch.Tensor) and isinstance(name, str) and not name.endswith("_")


def infer(graph: Graph, node: Node) -> Any:
    """``node``'s proxy value, computed on fake tensors with its unknown ancestors' first
    when it is not known yet; ``inspect._empty`` when it cannot be known."""
    value = node.proxy_value
    if value is not _EMPTY or node.id in graph._unknown:
        return value
    core = graph._core
    pending = [node.id]
    stack = [node.id]
    seen = {node.id}
    while stack:  # every ancestor whose value is unknown and not known to be unknowable
        for dep in core.dependencies(stack.pop()):
            if dep in seen:
                continue
            seen.add(dep)
            if dep not in graph._unknown and graph._node(dep)._proxy_value is _EMPTY:
                pending.append(dep)
                stack.append(dep)
    for id in sorted(pending):  # a node only depends on older ones
        ancestor = graph._node(id)
        try:
            found = _run_one(graph, ancestor)
        except Exception as exc:
            graph._unknown[id] = f"{type(exc).__name__}: {exc}"
            continue
        if found is _EMPTY:
            graph._unknown[id] = _why_unknown(graph, ancestor)
        else:
            ancestor._proxy_value = found  # a cached result stays lazy until read
    return node.proxy_value


def _run_one(graph: Graph, node: Node) -> Any:
    kind = graph._core.kind(node.id)
    if kind == "grad":  # a gradient has its tensor's shape
        tensor = node.args[0] if node.args else None
        return getattr(tensor, "proxy_value", _EMPTY)
    if kind != "op" or not fake_safe(node.target):
        return _EMPTY
    if node.target is proxy_call:
        callee = node.args[0] if node.args else None
        value = getattr(callee, "proxy_value", callee)
        if value is _EMPTY or not _safe_callee(value):
            return _EMPTY
    return graph._fake_value(node.target, node.args, node.kwargs, node.source)


def _why_unknown(graph: Graph, node: Node) -> str:
    """Why ``_run_one`` found no value for ``node``, for messages."""
    kind = graph._core.kind(node.id)
    if kind == "argument":
        return (
            "the scan gave no value for it (scan=False, a generation step after the first, "
            "or a model fake tensors cannot run)"
        )
    if kind == "op" and not fake_safe(node.target):
        return "it is computed by a user function, which is not run while tracing"
    for dep in graph._core.dependencies(node.id):  # the first cause, which a chain keeps
        if graph._node(dep).proxy_value is _EMPTY:
            return graph._unknown.get(dep) or _why_unknown(graph, graph._node(dep))
    return "it depends on the data (like .item() or nonzero())"
