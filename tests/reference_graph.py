"""A small pure-Python model of the intervention-graph semantics, with no Rust.

It is the oracle of the property tests (``test_property.py``) and the baseline of the Python
benchmark (``benches/bench_tracing.py``). It implements the documented semantics as
``nnsight.tracing`` does, and nothing else (no validation, no device moves):

* names are ``<target name>_<n>``, skipping taken names;
* ``set_value`` stores the value, releases dependencies left without listeners, makes
  listeners left without missing dependencies ready (pushed in reverse on a LIFO stack), and
  releases the node itself if nothing listens to it;
* a drain pops only entries above the stack depth it started at;
* ``compile`` resets everything, runs executable nodes without dependencies, then sets the root;
* ``null`` and ``argument`` nodes never execute; an executed ``swap`` becomes ``graph.swap``;
* an exception in a target abandons the run: empty stack, no swap, every value released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EMPTY = object()
EXECUTES = {"op", "swap", "grad"}
RESERVED = {"argument", "swap", "null", "grad"}


def _map_nodes(obj: Any, fn: Callable[[RefNode], Any]) -> Any:
    if isinstance(obj, RefNode):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_nodes(item, fn) for item in obj]
    if isinstance(obj, tuple):
        return tuple(_map_nodes(item, fn) for item in obj)
    if isinstance(obj, dict):
        return {key: _map_nodes(item, fn) for key, item in obj.items()}
    if isinstance(obj, slice):
        return slice(_map_nodes(obj.start, fn), _map_nodes(obj.stop, fn), _map_nodes(obj.step, fn))
    return obj


class RefNode:
    __slots__ = (
        "args",
        "dependencies",
        "graph",
        "kind",
        "kwargs",
        "listeners",
        "name",
        "remaining_dependencies",
        "remaining_listeners",
        "target",
        "value",
    )

    def __init__(
        self, graph: RefGraph, name: str, target: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        self.graph = graph
        self.name = name
        self.target = target
        self.kind = target if isinstance(target, str) and target in RESERVED else "op"
        self.args = args
        self.kwargs = kwargs
        self.value: Any = EMPTY
        self.listeners: list[RefNode] = []
        self.dependencies: list[RefNode] = []
        self.remaining_listeners = 0
        self.remaining_dependencies = 0
        seen: set[int] = set()

        def record(dep: RefNode) -> RefNode:
            if id(dep) not in seen:
                seen.add(id(dep))
                self.dependencies.append(dep)
                dep.listeners.append(self)
            return dep

        _map_nodes((args, kwargs), record)

    def prepare_inputs(self) -> tuple[list[Any], dict[str, Any]]:
        def value(node: RefNode) -> Any:
            if node.value is EMPTY:
                raise ValueError(f"{node.name} has no value")
            return node.value

        return _map_nodes(self.args, value), _map_nodes(self.kwargs, value)

    def set_value(self, value: Any) -> None:
        graph = self.graph
        base = len(graph.ready)
        graph.store(self, value)
        graph.drain(base)

    def done(self) -> bool:
        return self.value is not EMPTY


class RefGraph:
    def __init__(self, module: Any = None) -> None:
        self.nodes: dict[str, RefNode] = {}
        self.name_idx: dict[str, int] = {}
        self.ready: list[RefNode] = []
        self.events: list[tuple[str, str]] = []
        self.swap: RefNode | None = None
        self.root = self.add("argument", args=["nnsight_root_module"])

    def add(
        self,
        target: Any,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> RefNode:
        target_name = target if isinstance(target, str) else target.__name__
        count = self.name_idx.get(target_name, 0)
        if name is None:
            k = count
            while f"{target_name}_{k}" in self.nodes:
                k += 1
            name = f"{target_name}_{k}"
        elif name in self.nodes:
            raise ValueError(f"a node named '{name}' already exists")
        self.name_idx[target_name] = count + 1
        node = RefNode(self, name, target, list(args or []), dict(kwargs or {}))
        self.nodes[name] = node
        return node

    def destroy(self, node: RefNode) -> None:
        if node.value is not EMPTY:
            node.value = EMPTY
            self.events.append(("destroy", node.name))

    def store(self, node: RefNode, value: Any) -> None:
        node.value = value
        self.events.append(("set", node.name))
        for dep in node.dependencies:
            dep.remaining_listeners -= 1
            if dep.remaining_listeners == 0:
                self.destroy(dep)
        for listener in reversed(node.listeners):
            listener.remaining_dependencies -= 1
            if listener.remaining_dependencies == 0 and listener.kind in EXECUTES:
                self.ready.append(listener)
        if node.remaining_listeners == 0:
            self.destroy(node)

    def drain(self, base: int) -> None:
        while len(self.ready) > base:
            node = self.ready.pop()
            self.events.append(("execute", node.name))
            if node.kind == "swap":
                self.swap = node
                continue
            try:
                args, kwargs = node.prepare_inputs()
                value = node.target(*args, **kwargs)
            except Exception:
                self.abort()
                raise
            self.store(node, value)

    def abort(self) -> None:
        self.ready.clear()
        self.swap = None
        for node in self.nodes.values():
            node.value = EMPTY

    def compile(self, module: Any) -> None:
        for node in self.nodes.values():
            node.value = EMPTY
            node.remaining_listeners = len(node.listeners)
            node.remaining_dependencies = len(node.dependencies)
        self.swap = None
        self.ready = [
            node
            for node in reversed(list(self.nodes.values()))
            if not node.dependencies and node.kind in EXECUTES
        ]
        self.drain(0)
        self.root.set_value(module)
