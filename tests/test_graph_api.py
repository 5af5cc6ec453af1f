"""The documented Graph / Node attributes and methods, names, and bad input."""

from __future__ import annotations

import inspect
import operator

import pytest
import torch

from nnsight import Graph, Node, Proxy, TracingError, ValueNotSetError
from nnsight.tracing.Proxy import proxy_call


def double(x):
    return x * 2


def test_graph_attributes_and_root() -> None:
    module = torch.nn.Linear(2, 2)
    graph = Graph(module)
    assert graph.validate is True and graph.tracing is True
    assert graph.proxy_class is Proxy
    assert graph.generation_idx == 0 and graph.swap is None
    assert isinstance(graph.module_proxy, Proxy)
    root = graph.module_proxy.node
    assert root.target == "argument" and root.args == ["nnsight_root_module"]
    assert root.proxy_value is module
    assert graph.argument_node_names == {"nnsight_root_module": [root.name]}
    assert list(graph.nodes) == [root.name] and graph.nodes[root.name] is root


def test_automatic_names_count_per_target_and_skip_explicit_names() -> None:
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=1, args=["x"])
    a = graph.add(target=operator.add, args=[x, 1])
    b = graph.add(target=operator.add, args=[x, 2], name="add_2")
    c = graph.add(target=operator.add, args=[x, 3])
    d = graph.add(target=operator.add, args=[x, 4])
    m = graph.add(target=operator.mul, args=[x, 4])
    assert [p.node.name for p in (a, b, c, d, m)] == ["add_0", "add_2", "add_3", "add_4", "mul_0"]
    assert graph.name_idx == {"argument": 2, "add": 4, "mul": 1}
    assert graph.argument_node_names == {
        "nnsight_root_module": ["argument_0"],
        "x": ["argument_1"],
    }
    assert graph.nodes["add_2"] is b.node and "add_4" in graph.nodes and "nope" not in graph.nodes


def test_duplicate_name_second_root_and_unknown_name_raise_without_changes() -> None:
    graph = Graph(None, validate=False)
    graph.add(target=double, args=[graph.module_proxy], name="twice")
    before = (list(graph.nodes), graph.name_idx)
    with pytest.raises(ValueError, match="'twice' already exists"):
        graph.add(target=double, args=[graph.module_proxy], name="twice")
    with pytest.raises(ValueError, match="one root module"):
        graph.add(target="argument", value=None, args=["nnsight_root_module"])
    with pytest.raises(TypeError, match="argument key"):
        graph.add(target="argument", value=None, args=[])
    assert (list(graph.nodes), graph.name_idx) == before
    with pytest.raises(KeyError, match="no node named 'ghost'"):
        graph.nodes["ghost"]


def test_adding_to_a_graph_that_is_not_tracing_raises() -> None:
    graph = Graph(None, validate=False)
    proxy = graph.module_proxy
    graph.tracing = False
    with pytest.raises(TracingError, match="no longer tracing") as info:
        proxy + 1
    assert __file__ in str(info.value)
    assert len(graph.nodes) == 1


def test_node_edges_counts_and_state() -> None:
    graph = Graph(None, validate=False)
    x = graph.module_proxy
    y = x + x  # one edge, however often x appears
    z = graph.add(target=operator.mul, args=[y, x])
    graph.add(target="null", args=[z])
    xn, yn, zn = x.node, y.node, z.node
    assert yn.dependencies == [xn] and xn.listeners == [yn, zn]
    assert zn.dependencies == [yn, xn] and yn.listeners == [zn]
    assert yn.graph is graph and yn.is_tracing()
    assert not yn.done()
    graph.compile(3)
    assert zn.value == 18 and zn.done() and zn.fulfilled() and not zn.redundant()
    assert not yn.done() and yn.redundant() and not xn.done()
    zn.destroy()
    assert not zn.done()
    with pytest.raises(ValueNotSetError, match=r"'mul_0' \(traced at .*\) has no value"):
        zn.value
    with pytest.raises(ValueNotSetError):
        y.value


def test_node_compile_resets_counts_and_value() -> None:
    graph = Graph(None, validate=False)
    y = graph.module_proxy + 1
    graph.add(target="null", args=[y])
    graph.compile(1)
    node = y.node
    assert node.value == 2 and node.remaining_listeners == 1
    node.remaining_listeners = 0
    node.remaining_dependencies = 5
    node.compile()
    assert not node.done()
    assert node.remaining_listeners == 1 and node.remaining_dependencies == 1


def test_node_constructor_registers_in_graph_and_node_add() -> None:
    graph = Graph(None, validate=False)
    node = Node("explicit", graph, None, double, [graph.module_proxy.node])
    assert graph.nodes["explicit"] is node
    assert node.dependencies == [graph.module_proxy.node]
    proxy = node.add(target=double, args=[node])
    assert proxy.node.name == "double_1"  # name_idx counted the explicit 'explicit' node


def test_argument_nodes_are_entry_points() -> None:
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=None, args=["x"])
    y = (x * 10).save()
    graph.compile(None)
    assert not y.node.done()
    graph.nodes[graph.argument_node_names["x"][0]].set_value(4)
    assert y.value == 40


def test_generation_idx_and_graph_printout() -> None:
    graph = Graph(None, validate=False)
    y = graph.module_proxy(1, k=2)
    graph.increment()
    assert graph.generation_idx == 1
    graph.compile(lambda a, k: a + k)
    assert graph.generation_idx == 0
    text = str(graph)
    assert f"%{y.node.name} = proxy_call(%argument_0, 1, k=2)" in text and __file__ in text
    assert y.node.target is proxy_call


def test_nodes_from_the_rust_fast_path_fill_every_slot_like_the_constructor() -> None:
    # Graph.add leaves the node to the core, which makes it on first use; Node(...) in Python.
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=1, args=["x"])
    fast = (x + 1).node
    slow = Node(None, graph, 5, operator.add, [x.node, 1])
    slots = [slot for slot in Node.__slots__ if slot != "__weakref__"]
    for node in (fast, slow):
        missing = [slot for slot in slots if not hasattr(node, slot)]
        assert missing == [], missing
    assert type(fast.id) is int and fast.args == [x.node, 1] and fast.kwargs == {}
    assert fast._graph_ref is slow._graph_ref and fast._core is slow._core
    assert fast.source[0] == slow.source[0] == __file__


def test_nodes_are_made_on_first_use_once_and_keep_their_identity() -> None:
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=1, args=["x"])
    y = x * 2
    z = y + x
    assert graph._nodes[-2:] == [None, None]  # not made by add
    node = graph.nodes["add_0"]
    assert node is z.node is graph.nodes["add_0"] and graph._nodes[-1] is node
    assert node.args == [y.node, x.node] and node.args[0] is graph.nodes["mul_0"]
    assert node.target is operator.add and node.source[0] == __file__
    assert list(graph.nodes) == ["argument_0", "argument_1", "mul_0", "add_0"]
    assert y.node.listeners == [node] and node.dependencies == [y.node, x.node]


def test_a_node_not_made_before_its_graph_died_still_names_its_line() -> None:
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=1, args=["x"])
    y = x + 1
    assert graph._nodes[-1] is None
    del graph
    node = y.node
    assert node.name == "add_0" and node.source[0] == __file__
    assert node.args[0].name == "argument_1" and node.target is operator.add
    with pytest.raises(TracingError, match="no longer exists"):
        y + 1


def test_nodes_is_a_read_only_dict_backed_by_the_core() -> None:
    graph = Graph(torch.nn.Linear(2, 2), validate=False)
    a = graph.module_proxy.weight
    b = a * 2
    nodes = graph.nodes
    assert isinstance(nodes, dict)
    names = ["argument_0", a.node.name, b.node.name]
    assert list(nodes) == names and list(nodes.keys()) == names and len(nodes) == 3
    assert list(nodes.values()) == [graph.module_proxy.node, a.node, b.node]
    assert dict(nodes.items())[b.node.name] is b.node
    assert {**nodes} == dict(zip(names, nodes.values(), strict=True)) == nodes.copy() == nodes
    assert nodes.get("missing") is None and nodes.get(a.node.name) is a.node
    assert "argument_0" in nodes and "missing" not in nodes and 3 not in nodes
    assert list(reversed(nodes)) == names[::-1]
    with pytest.raises(KeyError, match="missing"):
        nodes["missing"]
    for write in (
        lambda: nodes.__setitem__("x", a.node),
        lambda: nodes.pop("argument_0"),
        lambda: nodes.update({}),
        nodes.clear,
    ):
        with pytest.raises(TypeError, match="read-only"):
            write()
    assert len(nodes) == 3


def test_node_value_can_be_assigned_without_running_anything() -> None:
    graph = Graph(torch.nn.Linear(2, 2), validate=False)
    x = graph.add(target="argument", value=None, args=["x"])
    y = (x + 1).save()
    graph.compile(torch.nn.Linear(2, 2))
    x.node.value = torch.ones(2)  # a plain store, as 0.2's attribute: y does not run
    assert torch.equal(x.node.value, torch.ones(2)) and x.node.done()
    assert not y.node.done() and y.node.remaining_dependencies == 1
    x.node.value = inspect._empty
    assert not x.node.done()
    x.node.set_value(torch.ones(2))  # set_value propagates
    assert torch.equal(y.value, torch.full((2,), 2.0))


def test_a_second_reserved_module_node_is_refused() -> None:
    graph = Graph(torch.nn.Linear(2, 2), validate=False)
    with pytest.raises(ValueError, match="root module"):
        graph.add(target="module", value=torch.nn.Linear(2, 2))
    assert len(graph.nodes) == 1
