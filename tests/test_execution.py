"""Execution semantics against plain Python/PyTorch: order, freeing, null, swap, grad, reruns,
errors and device moves."""

from __future__ import annotations

import gc
import inspect
import operator
import weakref

import pytest
import torch

from nnsight import ExecutionError, Graph
from nnsight.errors import ValueNotSetError


def chain(graph: Graph, length: int):
    proxy = graph.module_proxy
    for _ in range(length):
        proxy = proxy * 2
    return proxy


def test_listener_and_dependency_propagation_order() -> None:
    graph = Graph(None, validate=False)
    x = graph.module_proxy
    a = x + 1
    b = x + 2
    c = a * b
    c.save()
    graph.record_events()
    graph.compile(1)
    assert graph.take_events() == [
        ("set", "argument_0"),
        ("execute", "add_0"),
        ("set", "add_0"),
        ("execute", "add_1"),
        ("set", "add_1"),
        ("destroy", "argument_0"),
        ("execute", "mul_0"),
        ("set", "mul_0"),
        ("destroy", "add_0"),
        ("destroy", "add_1"),
    ]
    assert c.value == (1 + 1) * (1 + 2)


def test_each_value_is_freed_as_soon_as_its_last_listener_ran() -> None:
    """Weakrefs to real tensors: at every step only the current and the previous value live."""
    graph = Graph(None, validate=False)
    refs: list[weakref.ref] = []
    alive_counts: list[int] = []

    def step(t: torch.Tensor) -> torch.Tensor:
        alive_counts.append(sum(r() is not None for r in refs))
        out = t * 2
        refs.append(weakref.ref(out))
        return out

    proxy = graph.module_proxy
    for _ in range(50):
        proxy = graph.add(target=step, args=[proxy])
    proxy.save()
    start = torch.ones(4)
    graph.compile(start)
    assert max(alive_counts) <= 1, alive_counts  # the input of each step only
    assert sum(r() is not None for r in refs) == 1  # only the saved last value
    assert torch.equal(proxy.value, torch.ones(4) * 2**50)


def test_null_keeps_values_alive_and_unsaved_values_are_freed() -> None:
    graph = Graph(None, validate=False)
    a = graph.module_proxy + 1
    b = a * 3
    a.save()
    graph.compile(2)
    assert a.value == 3
    with pytest.raises(ValueNotSetError):
        b.value
    assert graph.module_proxy.node.done() is False


def test_nodes_without_inputs_run_at_compile() -> None:
    graph = Graph(None, validate=False)
    z = graph.add(target=torch.zeros, args=[3]).save()
    graph.compile(None)
    assert torch.equal(z.value, torch.zeros(3))


def test_rerunning_a_compiled_graph_starts_from_scratch() -> None:
    graph = Graph(None, validate=False)
    out = chain(graph, 5).save()
    for start in (1, 3, 7):
        graph.compile(start)
        assert out.value == start * 32
        assert graph.nodes["mul_4"].remaining_listeners == 1


def test_swap_is_pending_until_consumed() -> None:
    graph = Graph(None, validate=False)
    x = graph.module_proxy
    original = x + 0
    replacement = original * 10
    graph.add(target="swap", value=True, args=[original, replacement])
    graph.compile(torch.tensor([1.0, 2.0]))
    swap = graph.swap
    assert swap is not None and swap.target == "swap" and not swap.done()
    assert original.node.done() and replacement.node.done()  # kept for the swap
    value = torch.tensor([5.0, 6.0])
    out = graph.get_swap(value)
    assert torch.equal(out, torch.tensor([10.0, 20.0]))
    assert graph.swap is None
    assert not original.node.done() and not replacement.node.done()  # released by the swap
    assert graph.get_swap(value) is value  # nothing pending: unchanged


def test_grad_node_receives_the_gradient_and_can_replace_it() -> None:
    weight = torch.randn(3, 3)
    inputs = torch.randn(2, 3)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ weight).sum()

    # Independent oracle: torch.autograd.grad on the hidden tensor.
    x = inputs.clone().requires_grad_()
    hidden = x @ weight
    (expected_hidden_grad,) = torch.autograd.grad(torch.tanh(hidden).sum(), hidden)

    graph = Graph(None, validate=False)
    h = graph.module_proxy
    grad = graph.add(target="grad", args=[h])
    saved_grad = (grad * 1).save()
    graph.add(target="swap", value=True, args=[grad, grad * 0])  # zero the grad flowing back

    leaf = inputs.clone().requires_grad_()
    hidden = leaf @ weight
    graph.compile(hidden)  # registers the hook on `hidden`
    torch.tanh(hidden).sum().backward()
    assert torch.allclose(saved_grad.value, expected_hidden_grad)
    assert torch.equal(leaf.grad, torch.zeros_like(leaf))  # the swapped (zero) grad flowed on
    assert forward(inputs).requires_grad is False


def test_execution_error_names_node_and_line_and_leaves_graph_reusable() -> None:
    graph = Graph(None, validate=False)
    a = (graph.module_proxy + 1).save()
    bad = graph.add(target=operator.truediv, args=[a, graph.module_proxy])  # line recorded
    line = inspect.currentframe().f_lineno - 1
    bad.save()
    with pytest.raises(ExecutionError) as info:
        graph.compile(0)
    message = str(info.value)
    assert "node 'truediv_0' (truediv) raised ZeroDivisionError" in message
    assert f"{__file__}:{line}" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not a.node.done()  # the abandoned run released everything
    assert graph.swap is None
    graph.compile(4)  # the same graph runs again at once
    assert a.value == 5 and bad.value == 5 / 4


def test_slow_path_node_error_is_wrapped_too() -> None:
    graph = Graph(None, validate=False)
    bad = graph.add(target=torch.cat, args=[[graph.module_proxy, torch.ones(2, 2)]])
    bad.save()
    with pytest.raises(ExecutionError, match="node 'cat_0' \\(cat\\) raised"):
        graph.compile(torch.ones(3))
    graph.compile(torch.ones(2, 2))
    assert bad.value.shape == (4, 2)


def test_error_releases_values_and_graph_is_collectable() -> None:
    graph = Graph(None, validate=False)
    tensor = torch.ones(1000)
    ref = weakref.ref(tensor)
    kept = (graph.module_proxy * 2).save()
    (kept / "x").save()
    with pytest.raises(ExecutionError):
        graph.compile(tensor)
    del tensor
    assert ref() is None
    with pytest.raises(ValueNotSetError):
        kept.value
    graph_ref = weakref.ref(graph)
    del graph, kept
    gc.collect()
    assert graph_ref() is None


def test_prepare_inputs_resolves_nested_nodes_and_moves_to_first_device() -> None:
    graph = Graph(None, validate=False)
    x = graph.module_proxy
    node = graph.add(target=torch.cat, args=[[x, torch.ones(2)]], kwargs={"dim": 0}).node
    sliced = graph.add(target=operator.getitem, args=[torch.arange(10), slice(x.node, None)])
    # Not compiled: setting x runs nothing, so prepare_inputs is called by hand.
    x.node.remaining_listeners = 99  # keep x's value
    x.node.set_value(torch.zeros(2, device="meta"))
    args, kwargs = node.prepare_inputs()
    assert args[0][0].device.type == "meta" and args[0][1].device.type == "meta"
    assert kwargs == {"dim": 0}
    x.node.set_value(3)
    args, _ = sliced.node.prepare_inputs()
    assert args[1] == slice(3, None, None)


def test_fast_path_moves_tensors_to_first_device() -> None:
    graph = Graph(None, validate=False)
    out = graph.add(target=torch.add, args=[graph.module_proxy, torch.ones(2)]).save()
    graph.compile(torch.zeros(2, device="meta"))
    assert out.value.device.type == "meta" and out.value.shape == (2,)


def test_method_name_targets_call_the_first_argument() -> None:
    graph = Graph(None, validate=False)
    out = graph.add(target="sum", args=[graph.module_proxy], kwargs={"dim": 0}).save()
    graph.compile(torch.ones(3, 2))
    assert torch.equal(out.value, torch.full((2,), 3.0))


def test_long_chain_runs_without_recursion() -> None:
    graph = Graph(None, validate=False)
    proxy = graph.module_proxy
    for _ in range(20_000):
        proxy = proxy + 1
    proxy.save()
    graph.compile(0)
    assert proxy.value == 20_000


def test_tensors_nested_in_containers_are_moved_to_the_first_device() -> None:
    """A constant tensor inside a list keeps the node off the fast path, so prepare_inputs
    moves it to the node value's device (meta here) before the call."""
    graph = Graph(None, validate=False)
    stacked = graph.add(target=torch.stack, args=[[graph.module_proxy, torch.ones(2)]]).save()
    graph.compile(torch.zeros(2, device="meta"))
    assert stacked.value.device.type == "meta" and stacked.value.shape == (2, 2)


def test_constant_only_containers_are_passed_as_they_are() -> None:
    graph = Graph(None, validate=False)
    picked = graph.module_proxy[(slice(None), 0)].save()
    graph.compile(torch.arange(6).reshape(3, 2))
    assert torch.equal(picked.value, torch.arange(6).reshape(3, 2)[:, 0])
