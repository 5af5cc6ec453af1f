"""Graph: the intervention graph of one trace, rooted at a ``torch.nn.Module``."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

import torch

from .._core import ROOT_ARGUMENT, ForeignNode, GraphCore
from ..errors import TracingError, ValidationError, caused_by
from . import fake_cache, inference
from ._describe import describe
from ._source import format_source, user_source
from ._walk import first_instance, iter_instances, map_structure
from .effects import has_effect, target_has_effect
from .fake_cache import LazyFake, LazyValue
from .Node import RESERVED_TARGETS, Node, not_saved_error, target_name
from .Proxy import Proxy, bind_node, proxy_call
from .validation import FakeRunner

_EMPTY = inspect._empty
#: Bare instances for ``add``'s hot path, filled by ``Node._setup`` and the proxy's slot.
_new_object = object.__new__


class NodeMap(dict):  # type: ignore[type-arg]
    """``Graph.nodes``: node name -> ``Node``, in the order added; a read-only ``dict``.

    It is a ``dict`` (``isinstance(graph.nodes, dict)``, as in nnsight 0.2) whose contents live
    in the Rust core: names are resolved there and each ``Node`` is made on first use, so the
    ``dict`` storage itself stays empty and every read goes through the methods below. An
    unknown name raises ``KeyError`` naming it; writing raises ``TypeError``.
    """

    __slots__ = ("_core", "_nodes")

    def __init__(self, core: GraphCore, nodes: list[Node | None]) -> None:
        super().__init__()
        self._core = core
        self._nodes = nodes

    def __getitem__(self, name: str) -> Node:
        return node_at(self._core, self._nodes, self._core.id_of(name))

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._core

    def __iter__(self) -> Iterator[str]:
        return (self._core.name_of(i) for i in range(len(self._nodes)))

    def __reversed__(self) -> Iterator[str]:
        return (self._core.name_of(i) for i in reversed(range(len(self._nodes))))

    def __len__(self) -> int:
        return len(self._nodes)

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return KeysView(self)

    def values(self) -> ValuesView[Node]:  # type: ignore[override]
        return ValuesView(self)

    def items(self) -> ItemsView[str, Node]:  # type: ignore[override]
        return ItemsView(self)

    def copy(self) -> dict[str, Node]:  # type: ignore[override]
        return {name: self[name] for name in self}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict[str, Node]:  # type: ignore[override]
        return {**self.copy(), **other}

    def __repr__(self) -> str:
        return f"NodeMap({list(self)})"

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Graph.nodes is read-only: add nodes with Graph.add")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    pop = popitem = setdefault = update = clear = _read_only  # type: ignore[assignment]


class Graph:
    """Represents a computation graph involving a ``torch.nn.Module``.

    Reserved target names:
        * ``'argument'``: entry points whose values are set from outside the graph. The first
          argument is the argument key; ``argument_node_names[key]`` lists the nodes under it.
          The root module is the argument node keyed ``'nnsight_root_module'``.
        * ``'swap'``: when executed, becomes the graph's pending ``swap``; its value is set only
          when the swap is consumed (:meth:`get_swap`). The replacement is its last argument.
        * ``'null'``: never executed, so its dependencies are never destroyed (``.save()``).
        * ``'grad'``: registers a hook on the tensor in its first argument; the node's value is
          the gradient, and a swap pending when the hook fires replaces that gradient.

    Attributes:
        validate: If to run each added node on fake tensors to find shape errors at trace time.
        proxy_class: Proxy class to use.
        tracing: If currently tracing operations; ``add`` refuses once it is False.
        nodes: Mapping of node name to node.
        name_idx: Mapping of target name to the number of nodes added with it (a snapshot).
        module_proxy: Proxy of the root module.
        argument_node_names: Map of argument key to the names of its argument nodes (a snapshot).
        generation_idx: Current generation index.
        swap: The pending swap node, or None.

    Names are ``<target name>_<n>``, one counter per target name (``add_0``, ``add_1``); an
    automatic name skips names given explicitly, and a duplicate explicit name raises
    ``ValueError``. Nodes that need no input run at ``compile``, before the root is set.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        proxy_class: type[Proxy] = Proxy,
        validate: bool = True,
    ) -> None:
        self._weak_self = weakref.ref(self)  # shared by all nodes (they hold the graph weakly)
        self._core = GraphCore(_EMPTY, torch.Tensor, Proxy, Node, self._weak_self)
        #: Node objects by id; None for a node not made yet (see ``_node``).
        self._nodes: list[Node | None] = []
        self._fake = FakeRunner()
        self.nodes = NodeMap(self._core, self._nodes)
        self._proxy_class = proxy_class
        self._validate = validate
        self._tracing = True
        self._sync_core_modes()
        #: One ``grad`` node's proxy per node whose ``.grad`` was read (see ``grad_of``).
        self._grads: dict[int, Proxy] = {}
        self._has_grads = False
        #: Nodes whose proxy value ``infer`` found cannot be known, with the reason.
        self._unknown: dict[int, str] = {}
        self._ran = False  # compiled (run) at least once
        self.generation_idx = 0
        self.module_proxy = self.add(target="argument", value=module, args=[ROOT_ARGUMENT])

    # ----- settings (the core is told what its fast paths may assume) -------------------------

    @property
    def tracing(self) -> bool:
        return self._tracing

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self._tracing = on
        self._sync_core_modes()

    @property
    def validate(self) -> bool:
        return self._validate

    @validate.setter
    def validate(self, on: bool) -> None:
        self._validate = on
        self._sync_core_modes()

    @property
    def proxy_class(self) -> type[Proxy]:
        return self._proxy_class

    @proxy_class.setter
    def proxy_class(self, cls: type[Proxy]) -> None:
        self._proxy_class = cls
        self._sync_core_modes()

    def _sync_core_modes(self) -> None:
        """Tells the core whether the graph is tracing, and lets proxy operators add their
        nodes in one core call (``GraphCore.add_op``) while that is all ``add`` would do:
        tracing, not validating, and a proxy class whose only ``__init__`` is ``Proxy``'s."""
        cls = self._proxy_class
        fast = self._tracing and not self._validate and cls.__init__ is Proxy.__init__
        self._core.set_modes(self._tracing, cls if fast else None)

    # ----- views kept by the core -------------------------------------------------------------

    @property
    def name_idx(self) -> dict[str, int]:
        return self._core.name_idx()

    @property
    def argument_node_names(self) -> dict[str, list[str]]:
        return self._core.argument_node_names()

    @property
    def swap(self) -> Node | None:
        swap = self._core.swap()
        return None if swap is None else self._node(swap)

    @swap.setter
    def swap(self, node: Node | None) -> None:
        self._core.set_swap(None if node is None else node.id)

    # ----- building ---------------------------------------------------------------------------

    def add(
        self,
        target: Any,
        value: Any = _EMPTY,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Proxy:
        """Adds a node to the graph and returns its proxy.

        Args:
            target: The function to call, or a reserved target name, or the name of a method of
                the first argument.
            value: Proxy value of the node. Left out while ``validate`` is on, it is computed by
                running ``target`` on the arguments' proxy values under a ``FakeTensorMode``.
            args: Positional arguments (proxies and nodes allowed, nested too).
            kwargs: Keyword arguments, likewise.
            name: Unique name of the node; by default ``<target name>_<n>``.

        Raises:
            TracingError: The graph is no longer tracing, or arguments mix graphs.
            ValidationError: The fake run failed (e.g. a shape error); the message names the
                operation and the user's file and line, and the graph is left unchanged.
            ValueError: ``name`` is taken, or a second root module node is added.
        """
        if type(target) is str and target == "module":
            raise ValueError(
                "the graph already has its reserved root module node (the 'argument' node "
                f"keyed '{ROOT_ARGUMENT}', made with the graph); a graph has only one"
            )
        if not self._tracing:  # the attributes behind the properties: no frame each
            used = first_instance((args, kwargs), (Proxy, Node))
            node = used.node if isinstance(used, Proxy) else used
            if node is not None and node._core is self._core and self._ran and not node.done():
                raise not_saved_error(node, user_source(2))  # a proxy of a trace that has run
            raise TracingError(
                f"cannot add '{target_name(target)}' at {format_source(user_source(2))}: the "
                "graph is no longer tracing (proxies can only be used inside their trace)"
            )
        source = user_source(2)
        if value is _EMPTY and self._validate and not _is_reserved(target):
            value = self._fake_value(target, args, kwargs, source)
        proxy_class = self._proxy_class
        bare_proxy = proxy_class.__init__ is Proxy.__init__  # its only job: store the node
        if bare_proxy:
            # The usual case in one call into the core: link and record the node, make its
            # proxy; the Node object waits for its first use (see nnsight.tracing.Node).
            try:
                proxy = self._core.add_object(
                    proxy_class, self._nodes, name, target, value, args, kwargs, source
                )
            except ForeignNode:
                proxy = None  # Node._setup resolves finished nodes or raises
            if proxy is not None:
                return proxy
        node = _new_object(Node)
        node._setup(name, self, value, target, args, kwargs, source)
        if bare_proxy:
            proxy = _new_object(proxy_class)
            bind_node(proxy, node)
            return proxy
        return proxy_class(node)

    def _fake_value(
        self,
        target: Any,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        source: tuple[str, int],
    ) -> Any:
        inputs = ([] if args is None else args, {} if kwargs is None else kwargs)
        unknown = False
        materialize = isinstance(target, str)  # method-name targets need real fakes to bind

        def to_fake(item: Proxy | Node | torch.Tensor) -> Any:
            # One pass: proxies and nodes become their proxy values, every real tensor (also
            # inside a proxy value) its fake twin; an unknown proxy value ends validation.
            # Cached proxy values stay lazy for the cache lookup and are built (and kept on
            # their node) only when the op must really run.
            nonlocal unknown
            if isinstance(item, torch.Tensor):
                return self._fake.fakify(item)
            node = item.node if isinstance(item, Proxy) else item
            value = node._proxy_value
            if materialize or (type(value) is not LazyFake and isinstance(value, LazyValue)):
                value = node.proxy_value
            unknown = unknown or value is _EMPTY
            return self._fake.fakify(value)

        fake_args, fake_kwargs = map_structure(inputs, to_fake, (Proxy, Node, torch.Tensor))
        if unknown:
            return _EMPTY
        key = None
        if not materialize:
            key = fake_cache.cache_key(target, fake_args, fake_kwargs)
            cached = self._fake.lookup(key)
            if cached is not _EMPTY:
                return cached
            if fake_cache.holds_lazy((fake_args, fake_kwargs)):
                materialize = True
                fake_args, fake_kwargs = map_structure(inputs, to_fake, (Proxy, Node, torch.Tensor))
        call = target
        if isinstance(target, str):
            obj, *fake_args = fake_args
            call = getattr(obj, target)
        try:
            known, value = self._fake.run(call, fake_args, fake_kwargs, key)
        except Exception as exc:
            shown = ", ".join(
                [describe(a) for a in fake_args]
                + [f"{k}={describe(v)}" for k, v in fake_kwargs.items()]
            )
            raise caused_by(
                ValidationError,
                exc,
                f"{target_name(target)}({shown}) failed at {format_source(source)}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        return value if known else _EMPTY

    # ----- gradients and proxy values on demand ----------------------------------------------

    def grad_of(self, proxy: Proxy) -> Proxy:
        """The proxy of ``proxy``'s gradient: a ``grad`` node (a hook on the tensor, set when
        backward reaches it), made on first use and then reused, until :meth:`set_grad`."""
        node = proxy.node
        grad = self._grads.get(node.id)
        if grad is None:
            grad = self.add(target="grad", value=node._proxy_value, args=[node])
            self._grads[node.id] = grad
            self._has_grads = True
        return grad

    def set_grad(self, proxy: Proxy, value: Any) -> None:
        """Replaces the gradient flowing back into ``proxy`` with ``value`` (a ``swap`` of its
        ``grad`` node). A later ``.grad`` read gets a new ``grad`` node, whose hook runs after
        the replacing one and so sees ``value``, as in nnsight 0.2."""
        self.add(target="swap", value=_EMPTY, args=[self.grad_of(proxy).node, value])
        del self._grads[proxy.node.id]

    @property
    def has_grads(self) -> bool:
        """Whether any ``grad`` node was made."""
        return self._has_grads

    def infer_proxy_value(self, node: Node) -> Any:
        """``node``'s proxy value, run on fake tensors now (with whatever it depends on) when it
        is not known yet; ``inspect._empty`` when it cannot be known (see ``inference``)."""
        return inference.infer(self, node)

    def unknown_reason(self, node: Node) -> str | None:
        """Why :meth:`infer_proxy_value` could not know ``node``'s value, if it tried."""
        return self._unknown.get(node.id)

    def eliminate_dead_code(self) -> list[Node]:
        """Marks the nodes that cannot affect any result as dead, and returns them.

        A node is live when it has an effect of its own (see :mod:`nnsight.tracing.effects`:
        saves, swaps, in-place edits, calls that may do anything) or a live node uses its value.
        Dead nodes never execute and hold no values alive. Applies from the next
        :meth:`compile`; adding a node undoes it. (nnsight 0.2 had this method as a stub.)
        """
        return [self._node(i) for i in self._eliminate_dead_code()]

    def _eliminate_dead_code(self) -> list[int]:
        """``eliminate_dead_code``, returning ids: it makes no node ``add`` left unmade."""
        effects, undecided = self._core.effect_facts()  # reserved kinds decided in the core
        nodes = self._nodes
        for i, target, passes_out in undecided:
            if nodes[i] is None and target is not None and target is not proxy_call:
                effects[i] = target_has_effect(target, passes_out)  # leaves the node unmade
            else:
                effects[i] = has_effect(self._node(i))
        return self._core.eliminate_dead_code(effects)

    # ----- running ----------------------------------------------------------------------------

    def compile(self, module: torch.nn.Module) -> None:
        """Prepares a new execution and starts it.

        Resets every node (remaining counts, values, the pending swap), sets ``generation_idx``
        to 0, runs the nodes that need no input, and finally sets the root module node's value
        to ``module``, which executes everything that depends only on it.
        """
        self.generation_idx = 0
        self._ran = True
        self._core.compile(self._nodes)
        root = self._core.root()
        if root is not None:
            self._core.set_value(root, module, self._nodes)

    def get_swap(self, value: Any) -> Any:
        """Consumes the pending swap, if any.

        Returns the swap node's replacement (its last argument, nodes replaced by their values,
        tensors moved to the device of the first tensor in ``value``) and sets the swap node's
        value so its inputs can be released. Without a pending swap, returns ``value``.
        """
        swap = self.swap
        if swap is None:
            return value
        device = next((t.device for t in iter_instances(value, torch.Tensor)), None)
        replacement = map_structure(swap.args[-1] if swap.args else None, _value_of, Node)
        if device is not None:
            replacement = map_structure(replacement, lambda t: t.to(device), torch.Tensor)
        self._core.set_swap(None)
        swap.set_value(True)
        return replacement

    def increment(self) -> None:
        """Increments ``generation_idx`` (called once per generated token)."""
        self.generation_idx += 1

    # ----- introspection ----------------------------------------------------------------------

    def record_events(self, on: bool = True) -> None:
        """Starts (or stops) recording what runs and what is freed; see :meth:`take_events`."""
        self._core.record_events(on)

    def take_events(self) -> list[tuple[str, str]]:
        """Events recorded since the last call, as ``(kind, node name)`` with kind one of
        ``'execute'``, ``'set'`` and ``'destroy'``, in the order they happened."""
        return [(kind, self._core.name_of(i)) for kind, i in self._core.take_events()]

    def _node(self, id: int) -> Node:
        """The node with this id, made now if ``add`` left it to be made on first use."""
        return node_at(self._core, self._nodes, id)

    def _all_nodes(self) -> list[Node]:
        """Every node, in the order added (making those not made yet)."""
        return [self._node(i) for i in range(len(self._nodes))]

    def vis(self, filename: str = "graph", format: str = "png") -> Any:
        """Draws the graph with graphviz (the ``vis`` extra): writes the DOT source to
        ``filename`` and the picture to ``filename.<format>``, and returns the
        ``graphviz.Digraph``. Each node is labelled with its name, target and the user line
        that made it. Without graphviz's ``dot`` program this raises an ``NNsightError``
        saying the DOT file was written anyway. (nnsight 0.2's name; its arguments differ.)"""
        from .picture import render

        return render(self, filename, format)

    def __str__(self) -> str:
        return "\n".join(str(node) for node in self._all_nodes())

    def __repr__(self) -> str:
        return f"<Graph: {len(self._nodes)} nodes>"


def node_at(core: GraphCore, nodes: list[Node | None], id: int) -> Node:
    """``nodes[id]``, or the node the core makes for it when it is not made yet."""
    node = nodes[id]
    return core.node(id, nodes) if node is None else node


def _is_reserved(target: Any) -> bool:
    return isinstance(target, str) and target in RESERVED_TARGETS


def _value_of(node: Node) -> Any:
    return node.value
