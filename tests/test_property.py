"""Random DAGs run through nnsight.tracing and through the pure-Python reference model must
execute the same nodes in the same order, set the same values and free them at the same time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_graph import RefGraph

from nnsight import ExecutionError, Graph


def combine(*values: int) -> int:
    return sum(values) * 3 + 1


def combine_nested(values: list[int], offset: int = 0) -> int:
    return sum(values) - offset


class Boom(Exception):
    pass


def explode(*values: int) -> int:
    raise Boom("target failed")


# (kind, dependency indices); index 0 is the root argument node.
node_spec = st.tuples(
    st.sampled_from(["op"] * 6 + ["nested"] * 2 + ["null"] * 2 + ["swap"]),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=4),
)


def build(specs: list[tuple[str, list[int]]], fail_at: int | None) -> tuple[Graph, RefGraph]:
    graph = Graph(None, validate=False)
    ref = RefGraph()
    ours: list[Any] = [graph.module_proxy.node]
    theirs: list[Any] = [ref.root]
    for i, (kind, raw_deps) in enumerate(specs, start=1):
        deps = [d % i for d in raw_deps]
        if kind == "null" and not deps:
            deps = [i - 1]
        if kind == "swap" and not deps:
            deps = [i - 1]
        targets = {"op": combine, "nested": combine_nested, "null": "null", "swap": "swap"}
        target: Any = targets[kind]
        if i == fail_at:
            target = explode
        for nodes, g in ((ours, graph), (theirs, ref)):
            args: list[Any] = [nodes[d] for d in deps]
            kwargs: dict[str, Any] = {}
            if kind == "nested" and i != fail_at:
                args = [args]
                kwargs = {"offset": nodes[deps[0]]} if deps else {}
            if isinstance(g, Graph):
                nodes.append(g.add(target=target, args=args, kwargs=kwargs).node)
            else:
                nodes.append(g.add(target, args=args, kwargs=kwargs))
    return graph, ref


def check_same_state(graph: Graph, ref: RefGraph) -> None:
    assert graph.take_events() == ref.events
    ref.events.clear()
    for name, ref_node in ref.nodes.items():
        node = graph.nodes[name]
        assert node.done() == ref_node.done(), name
        if ref_node.done():
            assert node.value == ref_node.value, name
        assert node.remaining_listeners == ref_node.remaining_listeners, name
        assert node.remaining_dependencies == ref_node.remaining_dependencies, name
    ref_swap = ref.swap.name if ref.swap is not None else None
    assert (graph.swap.name if graph.swap is not None else None) == ref_swap


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(node_spec, min_size=1, max_size=30), root=st.integers(-5, 5))
def test_random_dags_match_reference(specs: list[tuple[str, list[int]]], root: int) -> None:
    graph, ref = build(specs, fail_at=None)
    assert list(graph.nodes) == list(ref.nodes)
    assert graph.name_idx == ref.name_idx
    graph.record_events()
    for run in range(2):  # a compiled graph reruns from scratch
        graph.compile(root + run)
        ref.compile(root + run)
        check_same_state(graph, ref)


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(node_spec, min_size=2, max_size=20), data=st.data())
def test_failing_target_aborts_like_reference(specs: list[tuple[str, list[int]]], data) -> None:
    fail_at = data.draw(st.integers(1, len(specs)))
    graph, ref = build(specs, fail_at=fail_at)
    graph.record_events()
    ref_error = None
    try:
        ref.compile(1)
    except Boom as exc:
        ref_error = exc
    if ref_error is None:
        graph.compile(1)  # the failing node never ran (e.g. it is only a dependency of nothing)
    else:
        with pytest.raises(ExecutionError) as info:
            graph.compile(1)
        assert isinstance(info.value.__cause__, Boom)
        assert info.value.node_name == f"explode_{0}"
    check_same_state(graph, ref)
