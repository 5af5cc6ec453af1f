"""Gradients inside a trace: ``.grad`` read and set, ``.backward()`` traced in the block,
checked against ``torch.autograd.grad`` and gradient hooks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from model_helpers import grad_at, mlp, outputs_of

from nnsight import NNsight


def test_grad_of_an_activation_matches_autograd() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x):
        grad = model[2].output.grad.save()
        model.output.sum().backward()
    expected = grad_at(net, net[2], x, lambda out: out.sum())
    assert torch.allclose(grad.value, expected)
    assert outputs_of(net, [net[2]], x)[0][0].shape == grad.shape
    net.zero_grad()


def first_weight_grad_with(
    net: torch.nn.Sequential, x: torch.Tensor, change: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``net[0].weight.grad`` of ``net(x).sum()`` with a hook applying ``change`` to the
    gradient flowing back into ``net[2]``'s output (plain PyTorch, for comparison)."""

    def on_output(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        out.register_hook(change)

    handle = net[2].register_forward_hook(on_output)
    try:
        net(x).sum().backward()
    finally:
        handle.remove()
    grad = net[0].weight.grad.clone()
    net.zero_grad()
    return grad


def test_setting_grad_replaces_the_gradient_flowing_back() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x):
        hidden = model[2].output
        hidden.grad = hidden.grad * 0
        model.output.sum().backward()
    ours = net[0].weight.grad.clone()
    net.zero_grad()
    assert torch.equal(ours, first_weight_grad_with(net, x, lambda g: g * 0))
    assert torch.all(ours == 0)


def test_gradients_of_two_invokes_are_their_own_rows() -> None:
    net = mlp()
    model = NNsight(net)
    a, b = torch.randn(2, 8), torch.randn(3, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            grad_a = model[2].output.grad.save()
        with tracer.invoke(b):
            grad_b = model[2].output.grad.save()
            model.output.sum().backward()  # b's rows of the output only
    expected = grad_at(net, net[2], torch.cat([a, b]), lambda out: out[2:].sum())
    assert torch.allclose(grad_b.value, expected[2:])
    assert torch.equal(grad_a.value, expected[:2])  # zero: a's rows do not reach b's loss
    assert torch.all(grad_a.value == 0) and not torch.all(grad_b.value == 0)
    net.zero_grad()


def test_a_loss_over_both_invokes_reaches_both_invokes_rows() -> None:
    net = mlp()
    model = NNsight(net)
    a, b = torch.randn(2, 8), torch.randn(3, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            grad_a = model[2].output.grad.save()
            out_a = model.output
        with tracer.invoke(b):
            grad_b = model[2].output.grad.save()
            (out_a.sum() + model.output.sum()).backward()
    expected = grad_at(net, net[2], torch.cat([a, b]), lambda out: out.sum())
    assert torch.allclose(grad_a.value, expected[:2])
    assert torch.allclose(grad_b.value, expected[2:])
    net.zero_grad()


def test_reading_grad_after_setting_it_sees_the_new_gradient_as_in_nnsight_02() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x):
        hidden = model[2].output
        before = hidden.grad.save()
        hidden.grad = hidden.grad * 3
        after = hidden.grad.save()
        model.output.sum().backward()
    first_weight_grad = net[0].weight.grad.clone()
    net.zero_grad()
    expected = grad_at(net, net[2], x, lambda out: out.sum())
    assert torch.allclose(before.value, expected)
    assert torch.allclose(after.value, expected * 3)  # 0.2: the new one; we returned the old
    # And the tripled gradient is what flowed on into earlier layers.
    assert torch.allclose(first_weight_grad, first_weight_grad_with(net, x, lambda g: g * 3))


def test_grad_belongs_to_any_graph_with_intervention_proxies() -> None:
    from nnsight import Graph
    from nnsight.intervention import InterventionProxy

    graph = Graph(torch.nn.Linear(2, 2), proxy_class=InterventionProxy, validate=False)
    x = graph.add(target="argument", value=torch.ones(1, 2), args=["x"])
    grad = x.grad
    assert grad.node.target == "grad" and grad.node.args == [x.node]
    assert x.grad is grad  # one grad node per value until it is set
