"""Shapes of derived proxies on demand (``validate=False``): computed on fake tensors through
just the sub-graph asked about, cached, and never run when nobody asks. Each shape is checked
against the same computation on real tensors."""

from __future__ import annotations

import pytest
import torch
from model_helpers import mlp

from nnsight import NNsight, TracingError
from nnsight.tracing.Proxy import Proxy


def test_derived_proxies_know_shape_dtype_device_and_length() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(4, 8)
    with torch.no_grad():
        real = net[0](x)
    with model.trace(x) as tracer:
        out = model[0].output
        summed = out.sum(-1)
        sliced = (out * 2)[:, :3].transpose(0, 1)
        half = out.to(torch.float16)
        assert summed.shape == real.sum(-1).shape
        assert sliced.shape == (real * 2)[:, :3].transpose(0, 1).shape
        assert half.dtype == torch.float16 and half.device == real.device
        assert len(sliced) == 3 and sliced.ndim == 2
        rows = list(out[:2])  # unpacking a derived proxy
        assert len(rows) == 2 and rows[0].shape == real[0].shape
        cat = torch.cat([out, out], dim=1)
        assert cat.shape == torch.cat([real, real], dim=1).shape
        out.save()
    assert tracer.graph._fake.runs > 0


def test_a_trace_that_asks_nothing_runs_no_fake_tensor() -> None:
    net = mlp()
    model = NNsight(net)
    with model.trace(torch.randn(4, 8)) as tracer:
        hidden = model[0].output
        kept = ((hidden * 2).sum(-1).softmax(-1) + 1).save()
    assert tracer.graph._fake.runs == 0 and model._scanner.runs == 0
    assert kept.shape == (4,)


def test_a_second_question_is_a_lookup() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(4, 8)) as tracer:
        derived = (model[0].output + 1).mean(0)
        assert derived.shape == (8,)
        runs = tracer.graph._fake.runs
        assert derived.shape == (8,) and len(derived) == 8
        assert tracer.graph._fake.runs == runs


def test_a_long_chain_is_inferred_without_recursion() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(4, 8)):
        value = model[0].output
        for _ in range(3000):
            value = value * 1.0
        assert value.shape == (4, 8)


@pytest.mark.local_only("its target is a function of the test")
def test_user_functions_are_not_run_at_trace_time() -> None:
    calls: list[object] = []

    def noted(t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return t[:, :2]

    model = NNsight(mlp())
    with model.trace(torch.randn(4, 8)) as tracer:
        mine = tracer.apply(noted, model[0].output)
        after = mine + 1
        shape = after.shape  # unknown: traced like any attribute
        assert isinstance(shape, Proxy)
        with pytest.raises(TracingError, match="user function"):
            len(after)
        saved = after.save()
    assert len(calls) == 1  # only the real run called it
    assert saved.shape == (4, 2)


def test_a_failing_fake_run_leaves_the_value_unknown_with_its_reason() -> None:
    model = NNsight(mlp())
    with pytest.raises(RuntimeError):  # the real run raises, at the user's line
        with model.trace(torch.randn(4, 8)):
            bad = model[0].output @ torch.ones(3, 3)
            assert isinstance(bad.shape, Proxy)
            with pytest.raises(TracingError, match="RuntimeError"):
                len(bad)
            bad.save()


def test_tuple_values_give_a_tuple_of_shapes_as_in_nnsight_02() -> None:
    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x.sum(-1)

    model = NNsight(torch.nn.Sequential(Pair()))
    with model.trace(torch.randn(3, 5)):
        assert model[0].output.shape == (torch.Size([3, 5]), torch.Size([3]))
        first, second = model[0].output
        assert (first * 2).shape == (3, 5) and second.unsqueeze(0).shape == (1, 3)
