"""Node: one operation of an intervention graph.

A ``Node`` is a thin Python handle: its storage, edges, counts and value live in the graph's
Rust core (``nnsight._core.GraphCore``), addressed by ``node.id``. The Python side keeps what
only Python needs: the target, the args and kwargs (with proxies replaced by their nodes), the
proxy value, and the source line that made it.

A proxy value may be a :class:`~nnsight.tracing.fake_cache.LazyValue`, computed on first read.

Nodes made by ``Graph.add`` are lazy: the core keeps what the node is made of, its proxy
names it by id, and the ``Node`` object (and later its args and kwargs) is made on first use.
A graph whose proxies are dropped as it is built thus holds no Python object per node, which
keeps CPython's full collections (each walks torch's whole heap) from firing as it grows.
"""

from __future__ import annotations

import inspect
import weakref
from typing import TYPE_CHECKING, Any

import torch

from .._core import ForeignNode
from ..errors import ExecutionError, TracingError, ValueNotSetError, caused_by
from ._describe import describe_node
from ._source import format_source, user_source
from ._walk import iter_instances, map_structure
from .fake_cache import LazyValue
from .Proxy import Proxy

if TYPE_CHECKING:
    from .._core import GraphCore
    from .Graph import Graph

_EMPTY = inspect._empty

#: Reserved string targets and the kind of node each makes.
RESERVED_TARGETS = {"argument": "argument", "swap": "swap", "null": "null", "grad": "grad"}


def target_name(target: Any) -> str:
    """Name used for automatic node names: the string itself, else ``__name__``."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) else type(target).__name__


class Node:
    """An action to carry out while the graph runs, and the value it produces.

    Attributes:
        id: Index of the node in its graph's core.
        name: Unique name of the node.
        target: Function to execute, or a string: a reserved target (``argument``, ``swap``,
            ``null``, ``grad``) or the name of a method of the first argument.
        args: Positional arguments, with proxies replaced by their nodes.
        kwargs: Keyword arguments, likewise.
        proxy_value: Fake (or user-given) version of the value, from validation.
        source: ``(file, line)`` of the user code that made the node.

    Differences from nnsight 0.2, each deliberate:
        * ``listeners`` and ``dependencies`` hold each node once, even if it appears several
          times in the arguments (``x + x``); the counts match.
        * ``value`` raises :class:`~nnsight.errors.ValueNotSetError` when unset (use ``done()``
          to test) instead of returning ``inspect._empty``.
        * ``graph`` is held weakly (as in 0.2), but the value lives in the core, which the node
          holds strongly: a saved proxy's value outlives the graph object.
        * ``set_value`` releases the node's dependencies before running its listeners, and runs
          ready nodes from an explicit stack, not recursively (see ``nnsight._core``).
    """

    __slots__ = (
        "__weakref__",
        "_args",
        "_core",
        "_graph_ref",
        "_kwargs",
        "_name",
        "_proxy_value",
        "id",
        "source",
        "target",
    )

    id: int
    target: Any
    source: tuple[str, int]
    _name: str | None
    _args: list[Any] | None
    _kwargs: dict[str, Any] | None
    _core: GraphCore
    _graph_ref: weakref.ref[Graph]
    _proxy_value: Any

    def __init__(
        self,
        name: str | None,
        graph: Graph,
        value: Any,
        target: Any,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        source: tuple[str, int] | None = None,
    ) -> None:
        self._setup(name, graph, value, target, args, kwargs, source or user_source(2))

    def _setup(
        self,
        name: str | None,
        graph: Graph,
        value: Any,
        target: Any,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        source: tuple[str, int],
    ) -> None:
        """The body of ``__init__``; ``Graph.add`` calls it on a bare instance, which skips the
        constructor's dispatch on the hot path."""
        core: GraphCore = graph._core
        # The core copies and scans the top-level arguments itself; None: a container holds
        # a node, proxy or tensor, or the target is a method name, and our walk takes over.
        try:
            linked = core.add_linked(name, target, args, kwargs)
        except ForeignNode:
            linked = None  # the walk below resolves finished nodes or raises
        if linked is None:
            args = [] if args is None else list(args)
            kwargs = {} if kwargs is None else dict(kwargs)
            linked = _add_walked(core, name, target, args, kwargs, source)
        self.id, self._args, self._kwargs = linked
        self._name = name
        self._core = core
        self._graph_ref = graph._weak_self
        self.target = target
        self._proxy_value = value
        self.source = source
        graph._nodes.append(self)

    @property
    def args(self) -> list[Any]:
        """Positional arguments, with proxies replaced by their nodes."""
        args = self._args
        if args is None:
            args = self._load_links()[0]
        return args

    @args.setter
    def args(self, args: list[Any]) -> None:
        self._args = args

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments, with proxies replaced by their nodes."""
        kwargs = self._kwargs
        if kwargs is None:
            kwargs = self._load_links()[1]
        return kwargs

    @kwargs.setter
    def kwargs(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs

    def _load_links(self) -> tuple[list[Any], dict[str, Any]]:
        """Fills whichever of args and kwargs is unset from the core (a node ``Graph.add``
        made lazily keeps them there until first read)."""
        args, kwargs = self._core.linked_args(self.id)
        if self._args is None:
            self._args = args
        if self._kwargs is None:
            self._kwargs = kwargs
        return self._args, self._kwargs

    @property
    def proxy_value(self) -> Any:
        """Fake (or user-given) version of the value, from validation. A cached result is kept
        lazily and built into a ``FakeTensor`` here, on first read (see ``fake_cache``)."""
        value = self._proxy_value
        if isinstance(value, LazyValue):
            value = self._proxy_value = value.materialize()
        return value

    @proxy_value.setter
    def proxy_value(self, value: Any) -> None:
        self._proxy_value = value

    @property
    def name(self) -> str:
        """Unique name of the node (spelled by the core on first use, then cached)."""
        name = self._name
        if name is None:
            name = self._name = self._core.name_of(self.id)
        return name

    # ----- graph access -----------------------------------------------------------------------

    @property
    def graph(self) -> Graph:
        """The graph this node belongs to (held weakly)."""
        graph = self._graph_ref()
        if graph is None:
            raise ReferenceError(f"the graph of node '{self.name}' no longer exists")
        return graph

    def _graph_nodes(self) -> list[Node | None] | None:
        graph = self._graph_ref()
        return None if graph is None else graph._nodes

    def is_tracing(self) -> bool:
        """Whether the graph is alive and still tracing."""
        graph = self._graph_ref()
        return graph is not None and graph.tracing

    def add(
        self,
        target: Any,
        value: Any = _EMPTY,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Proxy:
        """Adds a node to this node's graph (``Graph.add``); raises if the graph is gone."""
        graph = self._graph_ref()
        if graph is None:
            if not self.done():  # a proxy of a trace that is over, used again
                raise not_saved_error(self, user_source())
            raise TracingError(
                f"cannot add '{target_name(target)}' after node '{self.name}': its graph no "
                "longer exists"
            )
        return graph.add(target, value, args, kwargs, name)

    # ----- edges and state (kept by the core) -------------------------------------------------

    @property
    def listeners(self) -> list[Node]:
        """Nodes that depend on this node."""
        graph = self.graph
        return [graph._node(i) for i in self._core.listeners(self.id)]

    @property
    def dependencies(self) -> list[Node]:
        """Nodes this node depends on."""
        graph = self.graph
        return [graph._node(i) for i in self._core.dependencies(self.id)]

    @property
    def remaining_listeners(self) -> int:
        return self._core.remaining_listeners(self.id)

    @remaining_listeners.setter
    def remaining_listeners(self, n: int) -> None:
        self._core.set_remaining_listeners(self.id, n)

    @property
    def remaining_dependencies(self) -> int:
        return self._core.remaining_dependencies(self.id)

    @remaining_dependencies.setter
    def remaining_dependencies(self, n: int) -> None:
        self._core.set_remaining_dependencies(self.id, n)

    @property
    def value(self) -> Any:
        """The value set during execution; raises ``ValueNotSetError`` when there is none.

        Assigning stores a value without propagating (as a plain attribute in nnsight 0.2: no
        listener runs, no count changes); assigning ``inspect._empty`` clears it. Use
        :meth:`set_value` to set a value and run what it makes ready.
        """
        value = self._core.value(self.id)
        if value is _EMPTY:
            raise ValueNotSetError(
                f"{describe_node(self)} (traced at {format_source(self.source)}) has no value: "
                f"{self._why_no_value()}"
            )
        return value

    @value.setter
    def value(self, value: Any) -> None:
        self._core.replace_value(self.id, value)

    def _why_no_value(self) -> str:
        graph = self._graph_ref()
        if graph is not None and not graph._ran:
            return (
                "the graph has not run yet; a trace runs when its `with` block ends, so read "
                ".value after the block (inside it, use the proxy itself)"
            )
        core = self._core
        if not any(core.kind(i) == "null" for i in core.listeners(self.id)):
            return (
                "its value was freed once nothing needed it any more; call .save() on the "
                "proxy in the trace to keep it"
            )
        if self._after_a_gradient():
            return (
                "it is (or is computed from) a gradient, and no backward pass reached it: call "
                ".backward() in the trace, on a value computed from the one whose .grad this is"
            )
        return (
            "the last run did not compute it (did the module it comes from run?), or it was "
            "freed since"
        )

    def _after_a_gradient(self) -> bool:
        """Whether this node is a ``grad`` node or depends on one."""
        core, seen, stack = self._core, {self.id}, [self.id]
        while stack:
            id = stack.pop()
            if core.kind(id) == "grad":
                return True
            fresh = [dep for dep in core.dependencies(id) if dep not in seen]
            seen.update(fresh)
            stack.extend(fresh)
        return False

    def done(self) -> bool:
        """Whether the value is set."""
        return self._core.done(self.id)

    def fulfilled(self) -> bool:
        """Whether every dependency has its value (``remaining_dependencies == 0``)."""
        return self._core.fulfilled(self.id)

    def redundant(self) -> bool:
        """Whether no listener still needs the value (``remaining_listeners == 0``)."""
        return self._core.redundant(self.id)

    def compile(self) -> None:
        """Resets this node's remaining counts to its edge counts and releases its value."""
        self._core.set_remaining_listeners(self.id, len(self._core.listeners(self.id)))
        self._core.set_remaining_dependencies(self.id, len(self._core.dependencies(self.id)))
        self._core.destroy(self.id)

    def destroy(self) -> None:
        """Releases the value."""
        self._core.destroy(self.id)

    def set_value(self, value: Any) -> None:
        """Sets the value, then propagates: dependencies that become redundant are destroyed,
        listeners that become fulfilled are executed (and so on, until nothing is ready), and
        this node is destroyed if nothing listens to it."""
        self._core.set_value(self.id, value, self._graph_nodes())

    # ----- execution --------------------------------------------------------------------------

    def execute(self) -> None:
        """Executes the node: ``null`` and ``argument`` do nothing, ``swap`` becomes the graph's
        pending swap, ``grad`` registers a gradient hook, anything else calls its target on the
        prepared inputs and sets the result as its value."""
        value = self._run()
        if value is not _EMPTY:
            self.set_value(value)

    def _run(self) -> Any:
        """Executes the target and returns the value to set (``inspect._empty``: none now).
        The core calls this for nodes it cannot call directly."""
        target = self.target
        if isinstance(target, str):
            if target in ("null", "argument"):
                return _EMPTY
            if target == "swap":
                self._core.set_swap(self.id)
                return _EMPTY
            if target == "grad":
                self._register_grad_hook()
                return _EMPTY
            args, kwargs = self.prepare_inputs()
            obj, *rest = args
            return getattr(obj, target)(*rest, **kwargs)
        args, kwargs = self.prepare_inputs()
        return target(*args, **kwargs)

    def _register_grad_hook(self) -> None:
        tensor = self.prepare_inputs()[0][0]
        node_ref = weakref.ref(self)

        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            node = node_ref()
            if node is None:
                return None
            node.set_value(grad)
            graph = node._graph_ref()
            return grad if graph is None else graph.get_swap(grad)

        tensor.register_hook(hook)

    def prepare_inputs(self) -> tuple[list[Any], dict[str, Any]]:
        """Args and kwargs with every node (also inside lists, tuples, dicts and slices)
        replaced by its value, and every tensor moved to the device of the first tensor found
        (args before kwargs, depth first)."""
        args, kwargs = map_structure((self.args, self.kwargs), _node_value, Node)
        first = next(iter_instances((args, kwargs), torch.Tensor), None)
        if first is not None:
            device = first.device

            def to_device(tensor: torch.Tensor) -> torch.Tensor:
                return tensor if tensor.device == device else tensor.to(device)

            args, kwargs = map_structure((args, kwargs), to_device, torch.Tensor)
        return list(args), kwargs

    @staticmethod
    def prepare_proxy_values(values: Any, device: torch.device | str | None = "meta") -> Any:
        """``values`` with every proxy and node (at any depth) replaced by its proxy value, and
        every tensor moved to ``device`` (``'meta'``, as documented for nnsight 0.2; None
        leaves tensors where they are).

        Validation does not use this: it runs under a ``FakeTensorMode`` that fakifies real
        tensors on their own device, so shapes and devices are checked as they will be.
        """
        values = map_structure(values, _proxy_value, (Proxy, Node))
        if device is not None:
            target = torch.device(device)

            def move(tensor: torch.Tensor) -> torch.Tensor:
                return tensor if tensor.device == target else tensor.to(target)

            values = map_structure(values, move, torch.Tensor)
        return values

    # ----- messages ---------------------------------------------------------------------------

    def _execution_error(self, exc: BaseException) -> BaseException:
        """The exception to raise when this node's target raised ``exc`` during execution: an
        ``ExecutionError`` that is also of ``exc``'s type (``except RuntimeError`` still works)."""
        if isinstance(exc, ExecutionError) or not isinstance(exc, Exception):
            return exc
        error = caused_by(
            ExecutionError,
            exc,
            f"node '{self.name}' ({target_name(self.target)}) raised "
            f"{type(exc).__name__}: {exc}\n  traced at {format_source(self.source)}",
        )
        error.node_name = self.name
        return error

    def __str__(self) -> str:
        def show(arg: Any) -> str:
            return f"%{arg.name}" if isinstance(arg, Node) else repr(arg)

        args = [show(arg) for arg in self.args]
        args += [f"{key}={show(arg)}" for key, arg in self.kwargs.items()]
        return (
            f"%{self.name} = {target_name(self.target)}({', '.join(args)})"
            f"  # {format_source(self.source)}"
        )

    def __repr__(self) -> str:
        return f"Node({self.name})"


def _node_value(node: Node) -> Any:
    return node.value


def _proxy_value(item: Proxy | Node) -> Any:
    return item.node.proxy_value if isinstance(item, Proxy) else item.proxy_value


#: Argument types ``_add_walked`` links without walking: plain values, and nodes and proxies
#: (subclasses of Proxy are checked with isinstance by the walk instead).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_ATOMS = _PLAIN | {Node, Proxy}


def _add_walked(
    core: GraphCore,
    name: str | None,
    target: Any,
    args: list[Any],
    kwargs: dict[str, Any],
    source: tuple[str, int],
) -> tuple[int, list[Any], dict[str, Any]]:
    """Adds a node the core will not call itself: a string target, or an op with nodes or
    tensors nested in its arguments (``Node._run`` resolves those and aligns devices).
    Proxies are replaced by nodes at any depth; returns the id and the linked arguments."""
    deps: list[int] = []

    def link(found: Proxy | Node) -> Any:
        node = found.node if isinstance(found, Proxy) else found
        if node._core is not core:
            # A graph may stand in a node of its own for it (a session's earlier trace).
            link_foreign = getattr(core.graph(), "link_foreign", None)
            stand_in = None if link_foreign is None else link_foreign(node, source)
            if stand_in is None:
                return _finished_value(node, source)
            node = stand_in
        deps.append(node.id)
        return node

    if kwargs or any(type(arg) not in _ATOMS for arg in args):
        args, kwargs = map_structure((args, kwargs), link, (Proxy, Node))
    else:  # flat arguments (reserved targets' usual case): no walk needed
        args = [arg if type(arg) in _PLAIN else link(arg) for arg in args]
    kind = RESERVED_TARGETS.get(target, "op") if isinstance(target, str) else "op"
    argument_key = None
    if kind == "argument":
        argument_key = args[0] if args else None
        if not isinstance(argument_key, str):
            raise TypeError(
                f"an 'argument' node needs its argument key (a str) as first argument, "
                f"got args={args!r}"
            )
    return core.add_node(name, target_name(target), kind, deps, argument_key), args, kwargs


def _finished_value(node: Node, used_at: tuple[str, int]) -> Any:
    """The value of a node of another graph, usable as a constant once that graph has finished
    running and kept it (a saved proxy). Anything else is an error: a proxy of a graph still
    being traced, or one whose value was freed because it was not saved."""
    if node.is_tracing():
        raise TracingError(
            f"at {format_source(used_at)}: proxy {describe_node(node)} belongs to another graph "
            f"that is still being traced (traced at {format_source(node.source)}); a proxy can "
            "only be used in the trace that made it"
        )
    if not node.done():
        raise not_saved_error(node, used_at)
    return node.value


def not_saved_error(node: Node, used_at: tuple[str, int]) -> TracingError:
    """The error for a proxy of a trace that has run, used again (on either side of an
    expression) although it was not saved."""
    return TracingError(
        f"at {format_source(used_at)}: proxy {describe_node(node)} (traced at "
        f"{format_source(node.source)}) comes from an earlier trace and was not saved, so "
        "its value no longer exists; call .save() on it in that trace to use it here"
    )
