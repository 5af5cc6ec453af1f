"""Memory and scale: values freed as soon as nothing needs them, dead code never run, long
chains, and thousands of traces leaving nothing behind."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from model_helpers import hook_count, mlp

from nnsight import NNsight
from nnsight.intervention import InterventionGraph, InterventionProxy


def test_a_thousand_traces_leave_no_graphs_proxies_tensors_or_hooks() -> None:
    net = mlp(width=4, depth=1)
    model = NNsight(net)
    x = torch.randn(2, 4)
    graphs: weakref.WeakSet[InterventionGraph] = weakref.WeakSet()
    proxies: weakref.WeakSet[InterventionProxy] = weakref.WeakSet()
    tensors: weakref.WeakSet[torch.Tensor] = weakref.WeakSet()
    gc.disable()  # everything must go by reference counting alone
    try:
        for _ in range(1000):
            with model.trace(x) as tracer:
                hidden = model[0].output
                doubled = (hidden * 2).save()
                model[1].output[:, 0] = 0
            graphs.add(tracer.graph)
            proxies.update((hidden, doubled))
            tensors.add(doubled.value)
        del tracer, hidden, doubled
        assert len(graphs) == 0 and len(proxies) == 0 and len(tensors) == 0
    finally:
        gc.enable()
    assert hook_count(net) == 0


@pytest.mark.local_only("counts the events of the local graph")
def test_dead_code_does_not_run() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        tracer.graph.record_events()
        hidden = model[0].output
        unused = (hidden * 3).sum()  # never saved or used: dead (mul, getattr, call)
        kept = (hidden + 1).save()
        model[1].output[:, 0] = 0  # an in-place edit: an effect, so it runs
    ran = {name for kind, name in tracer.graph.take_events() if kind == "execute"}
    assert unused.node.name not in ran and "mul_0" not in ran
    assert kept.node.name in ran and "setitem_0" in ran
    dead = {node.name for node in tracer.graph.eliminate_dead_code()}
    assert dead == {"mul_0", "getattr_0", "proxy_call_0", "argument_0"}  # + the unused root


@pytest.mark.local_only("counts the live tensors of the local run")
def test_each_value_is_freed_once_nothing_needs_it_and_only_saved_ones_survive() -> None:
    model = NNsight(mlp())
    made: list[weakref.ref[torch.Tensor]] = []
    alive_during: list[int] = []

    def step(t: torch.Tensor) -> torch.Tensor:
        alive_during.append(sum(ref() is not None for ref in made))
        out = t + 1
        made.append(weakref.ref(out))
        return out

    with torch.no_grad(), model.trace(torch.randn(2, 8)) as tracer:
        value = model[0].output
        for _ in range(20):
            value = tracer.apply(step, value)
        last = value.save()
    assert max(alive_during) <= 1  # the previous step's result only
    assert [ref() is not None for ref in made] == [False] * 19 + [True]
    assert last.value is made[-1]()


def test_a_chain_of_100k_ops_runs() -> None:
    model = NNsight(mlp(width=4, depth=1))
    x = torch.randn(1, 4)
    with torch.no_grad(), model.trace(x):
        value = model[0].output
        for _ in range(100_000):
            value = value + 1
        final = value.save()
    assert torch.allclose(final.value, model._model[0](x) + 100_000)


def test_saved_values_do_not_keep_the_inputs_alive() -> None:
    model = NNsight(mlp())
    x = torch.randn(2, 8)
    inputs = weakref.ref(x)
    with torch.no_grad(), model.trace(x):  # (autograd would keep x for the backward pass)
        saved = model[0].output.save()
    del x
    assert inputs() is None
    assert saved.shape == (2, 8)
