"""model.edit(): interventions recorded once apply to every later trace of the edited model,
against plain PyTorch with the same edit made by a forward hook."""

from __future__ import annotations

import pytest
import torch
from model_helpers import mlp

from nnsight import LanguageModel, NNsight, TracingError


def zero_first_feature(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
    output = output.clone()
    output[:, 0] = 0
    return output


def hooked_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    handle = net[0].register_forward_hook(zero_first_feature)
    try:
        return net(x)
    finally:
        handle.remove()


def test_an_edit_applies_to_every_later_trace_and_the_model_stays_clean() -> None:
    net = mlp()
    model = NNsight(net)
    with model.edit() as (_, edited):
        edited[0].output[:, 0] = 0
    for _ in range(2):
        x = torch.randn(3, 8)
        with edited.trace(x):
            out = edited.output.save()
            seen = edited[0].output.save()  # the trace's own reads see the edited value
        assert torch.equal(out.value, hooked_forward(net, x))
        assert (seen.value[:, 0] == 0).all()
    with model.trace(x):
        clean = model.output.save()
    assert torch.equal(clean.value, net(x))
    assert not net[0]._forward_hooks


def test_an_edit_applies_to_each_invoke_and_the_traces_writes_come_after_it() -> None:
    net = mlp()
    model = NNsight(net)
    with model.edit(inplace=True) as (_, edited):
        assert edited is model
        edited[0].output[:, 0] = 0
    a, b = torch.randn(1, 8), torch.randn(2, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            first = model.output.save()
        with tracer.invoke(b):
            model[0].output[:, 1] = 5  # after the edit, in this invoke only
            second = model.output.save()
    assert torch.equal(first.value, hooked_forward(net, a))

    def both(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        output = zero_first_feature(module, args, output)
        output[:, 1] = 5
        return output

    handle = net[0].register_forward_hook(both)
    try:
        expected = net(b)
    finally:
        handle.remove()
    assert torch.equal(second.value, expected)
    model.clear_edits()
    with model.trace(a):
        clean = model.output.save()
    assert torch.equal(clean.value, net(a))


def test_an_edit_of_a_language_model_layer() -> None:
    pytest.importorskip("transformers")
    import tempfile

    from nnsight.models.tiny import save_language_model

    with tempfile.TemporaryDirectory() as directory:
        model = LanguageModel(save_language_model(directory))
        with model.edit() as (_, edited):
            edited.transformer.h[0].output[0][:, -1] = 0  # the block's hidden state, last token
        with edited.trace("The Eiffel Tower is in"):
            logits = edited.lm_head.output.save()
        with model.trace("The Eiffel Tower is in"):
            model.transformer.h[0].output[0][:, -1] = 0
            expected = model.lm_head.output.save()
        with model.trace("The Eiffel Tower is in"):
            clean = model.lm_head.output.save()
    assert torch.equal(logits.value, expected.value)
    assert not torch.equal(logits.value, clean.value)


def test_saves_gradients_and_stops_are_refused_in_an_edit() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match=r"\.save\(\) at .*test_edit.py:\d+ inside model.edit"):
        with model.edit() as (_, edited):
            edited[0].output.save()
    with pytest.raises(TracingError, match=r"tracer.stop\(\) at .*inside model.edit"):
        with model.edit() as (tracer, edited):
            edited[0].output[:] = 1
            tracer.stop()
    assert model._edits == []
