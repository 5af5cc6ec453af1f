"""Nothing leaks: graphs, nodes, proxies and values are freed once unreachable."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from nnsight import ExecutionError, Graph


def test_thousands_of_graphs_are_freed_by_refcount_alone() -> None:
    graph_refs, tensor_refs = [], []
    gc.disable()
    try:
        for i in range(2000):
            graph = Graph(None, validate=False)
            out = (graph.module_proxy * 2 + i).save()
            value = torch.full((4,), float(i))
            graph.compile(value)
            assert torch.equal(out.value, value * 2 + i)
            graph_refs.append(weakref.ref(graph))
            tensor_refs.append(weakref.ref(out.value))
            del graph, out, value
        # No reference cycles among Graph, Node, Proxy and the core: refcounting frees all.
        assert sum(r() is not None for r in graph_refs) == 0
        assert sum(r() is not None for r in tensor_refs) == 0
    finally:
        gc.enable()


def test_saved_value_outlives_graph_object_and_dies_with_its_proxy() -> None:
    graph = Graph(None, validate=False)
    out = (graph.module_proxy + 1).save()
    graph.compile(torch.ones(3))
    value_ref = weakref.ref(out.value)
    del graph
    assert torch.equal(out.value, torch.full((3,), 2.0))
    del out
    assert value_ref() is None


def test_cycles_through_rust_held_objects_are_collected() -> None:
    """A target closing over its own graph makes a cycle through the Rust core; the core's
    __traverse__ lets the garbage collector see and break it."""
    graph = Graph(None, validate=False)

    class UsesGraph:
        def __call__(self, x):
            return x + len(self.graph.nodes)

    uses_graph = UsesGraph()
    uses_graph.graph = graph  # graph -> core -> target -> graph
    out = graph.add(target=uses_graph, args=[graph.module_proxy]).save()
    graph.compile(torch.ones(1))
    assert torch.equal(out.value, torch.full((1,), 4.0))
    refs = [weakref.ref(graph), weakref.ref(out.value), weakref.ref(out.node)]
    del graph, out, uses_graph
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_failed_runs_leak_nothing() -> None:
    refs = []
    for _ in range(50):
        graph = Graph(None, validate=False)
        kept = (graph.module_proxy * 2).save()
        graph.add(target=torch.matmul, args=[kept, torch.ones(5, 5)]).save()
        tensor = torch.ones(3, 3)
        refs.append(weakref.ref(tensor))
        with pytest.raises(ExecutionError):
            graph.compile(tensor)
        del graph, kept, tensor
    gc.collect()
    assert all(r() is None for r in refs)


def test_cycles_through_a_node_not_made_yet_are_collected() -> None:
    """A node Graph.add left unmade keeps its proxy value in the core; a cycle through it is
    still seen (and broken) by the collector."""
    graph = Graph(None, validate=False)

    class Box:
        pass

    box = Box()
    box.graph = graph  # graph -> core -> pending proxy value -> graph
    graph.add(torch.add, box, [graph.module_proxy, 1])
    assert graph._nodes[-1] is None  # its Node is not made
    refs = [weakref.ref(graph), weakref.ref(box)]
    del graph, box
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_building_a_graph_feeds_the_collector_nothing_per_node() -> None:
    """Graph.add keeps each node in the core until its Node is used, so a long graph built with
    its proxies dropped adds no tracked Python objects (CPython's full collections, which walk
    torch's whole heap, stay quiet)."""
    graph = Graph(None, validate=False)
    x = graph.add(target="argument", value=0, args=["x"])
    gc.collect()
    before = len(gc.get_objects())
    prev = x
    for _ in range(2000):
        prev = graph.add(target=torch.add, args=[prev, 1])
    gc.collect()
    assert len(gc.get_objects()) - before < 20  # 2,000 nodes; eager nodes made >= 6,000
    last = prev.save()
    graph.compile(None)
    graph.nodes[x.node.name].set_value(torch.zeros(()))
    assert last.value.item() == 2000
