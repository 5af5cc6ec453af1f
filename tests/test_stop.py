"""tracer.stop(), stop_early=True and tracer.result, against plain PyTorch: the modules after
the stop do not run (forward hooks count their calls), what was saved before it is exact."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch
from model_helpers import mlp

from nnsight import NNsight


def counting(net: torch.nn.Module) -> dict[int, int]:
    """Calls of each of ``net``'s layers, counted by forward hooks."""
    calls = dict.fromkeys(range(len(net)), 0)
    for index, layer in enumerate(net):
        layer.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_stop_ends_the_run_where_it_is_called_and_keeps_what_was_saved() -> None:
    net = mlp()
    calls = counting(net)
    x = torch.randn(3, 8)
    model = NNsight(net)
    with model.trace(x) as tracer:
        hidden = (model[2].output * 3).save()
        tracer.stop()
    assert calls == {0: 1, 1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0}
    assert torch.equal(hidden.value, net[2](net[1](net[0](x))) * 3)
    assert tracer.output is None and tracer.result is None


def test_an_edit_before_the_stop_applies_and_the_stopped_run_frees_the_rest() -> None:
    net = mlp()
    x = torch.randn(3, 8)
    model = NNsight(net)
    with model.trace(x) as tracer:
        model[0].output[:, 0] = 0
        after = model[1].output.save()
        unsaved = model[0].output * 2  # needed by the stop, not saved: freed when it ends
        tracer.stop()
    expected = net[0](x)
    expected[:, 0] = 0
    assert torch.equal(after.value, net[1](expected))
    assert not unsaved.node.done()


def test_stop_before_anything_runs_nothing_and_later_traces_are_clean() -> None:
    net = mlp()
    calls = counting(net)
    model = NNsight(net)
    with model.trace(torch.randn(2, 8)) as tracer:
        tracer.stop()
    assert sum(calls.values()) == 0 and tracer.output is None
    x = torch.randn(2, 8)
    with model.trace(x):
        out = model.output.save()
    assert torch.equal(out.value, net(x))
    assert all(not layer._forward_hooks or len(layer._forward_hooks) == 1 for layer in net)


def test_stop_early_stops_after_the_last_module_the_graph_needs() -> None:
    net = mlp()
    calls = counting(net)
    x = torch.randn(4, 8)
    model = NNsight(net)
    with model.trace(x, stop_early=True) as tracer:
        first = model[1].output.save()
        model[2].output[:] = 1.0  # a write is something the graph needs too
        third = model[3].output.save()
    assert torch.equal(first.value, net[1](net[0](x)))
    assert torch.equal(third.value, net[3](torch.ones(4, 8)))
    assert calls[4] == calls[5] == calls[6] == 0
    assert tracer.output is None


def test_stop_early_is_ignored_when_the_graph_reads_gradients() -> None:
    net = mlp()
    x = torch.randn(2, 8)
    model = NNsight(net)
    with model.trace(x, stop_early=True):
        hidden = model[2].output
        grad = hidden.grad.save()
        model.output.sum().backward()
    reference = x.clone()
    activations: dict[str, torch.Tensor] = {}
    net[2].register_forward_hook(lambda m, i, o: activations.setdefault("h", o))
    net(reference).sum().backward()
    activations["h"].retain_grad()
    h = activations["h"]
    (expected,) = torch.autograd.grad(net[6](net[5](net[4](net[3](h)))).sum(), h)
    assert torch.allclose(grad.value, expected)


def test_a_stopped_trace_leaks_no_graph() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        model[0].output.save()
        tracer.stop()
    graph = weakref.ref(tracer.graph)
    del tracer
    gc.collect()
    assert graph() is None


def test_result_is_the_runs_return_value_inside_and_after_the_block() -> None:
    net = mlp()
    x = torch.randn(2, 8)
    model = NNsight(net)
    with model.trace(x) as tracer:
        inside = tracer.result.save()
    assert torch.equal(inside.value, net(x)) and torch.equal(tracer.result, net(x))


def test_result_of_generate_is_the_generated_ids() -> None:
    pytest.importorskip("transformers")
    from test_transformers import gpt2

    net = gpt2()
    ids = torch.randint(1, 100, (1, 5))
    options: dict[str, Any] = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        expected = net.generate(ids, attention_mask=torch.ones_like(ids), **options)
    model = NNsight(net)
    with model.generate(ids, attention_mask=torch.ones_like(ids), **options) as tracer:
        model.lm_head.output.save()
    assert torch.equal(tracer.result, expected)


@pytest.mark.local_only("the bar counts the steps of a local run")
def test_progress_shows_a_bar_over_the_generation_steps(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tqdm")
    from test_transformers import gpt2

    net = gpt2()
    ids = torch.randint(1, 100, (1, 4))
    options: dict[str, Any] = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    model = NNsight(net)
    with model.generate(ids, attention_mask=torch.ones_like(ids), progress=True, **options):
        logits = model.lm_head.output.save()
    assert logits.shape[0] == 1
    err = capsys.readouterr().err
    assert "generate: 100%" in err and "3/3" in err
    assert not net._forward_hooks
