"""envoy.skip(value): the module does not run (a forward pre-hook counts its calls) and the
model goes on from ``value``, exactly as a manual forward that leaves the module out."""

from __future__ import annotations

import pytest
import torch
from model_helpers import Reuse, mlp

from nnsight import NNsight, TracingError

# The worker would run the module: skips are refused on the wire for now.
pytestmark = pytest.mark.local_only("envoy.skip does not travel to a remote worker")


class CountingLinear(torch.nn.Linear):
    """A Linear that counts the times its forward really runs."""

    runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        return super().forward(x)


def counting(net: torch.nn.Sequential, index: int) -> CountingLinear:
    old = net[index]
    new = CountingLinear(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    net[index] = new
    return new


def test_a_skipped_module_does_not_run_and_its_value_goes_on() -> None:
    net = mlp()
    x = torch.randn(3, 8)
    layer = counting(net, 2)
    model = NNsight(net)
    with model.trace(x):
        before = model[1].output
        model[2].skip(before * 2)
        skipped = model[2].output.save()
        out = model.output.save()
    assert layer.runs == 0
    hidden = net[1](net[0](x)) * 2
    assert torch.equal(skipped.value, hidden)
    assert torch.equal(out.value, net[6](net[5](net[4](net[3](hidden)))))
    assert net[2].forward.__func__ is CountingLinear.forward  # put back
    assert "forward" not in net[2].__dict__


def test_skip_with_a_constant_and_only_at_the_current_call() -> None:
    net = Reuse()
    x = torch.randn(2, 6)
    model = NNsight(net)
    constant = torch.ones(2, 6)
    with model.trace(x):
        model.shared.next().skip(constant)  # the second call only
        out = model.output.save()
    expected = net.out(constant)  # forward: out(shared(act(shared(x)))), second shared skipped
    assert torch.equal(out.value, expected)


def test_a_value_of_the_wrong_shape_is_refused_at_the_line_and_nothing_stays_hooked() -> None:
    net = mlp()
    model = NNsight(net)
    with pytest.raises(
        TracingError,
        match=r"skip\(\.\.\.\) at .*test_skip.py:\d+: the value has shape \(3, 5\) where "
        r"the module gives \(3, 8\)",
    ):
        with model.trace(torch.randn(3, 8)):
            model[2].skip(torch.zeros(3, 5))
    assert "forward" not in net[2].__dict__ and not net[2]._forward_hooks
    x = torch.randn(3, 8)
    with model.trace(x):
        out = model.output.save()
    assert torch.equal(out.value, net(x))


def test_a_value_from_a_later_module_is_an_error_naming_the_skip() -> None:
    net = mlp()
    model = NNsight(net)
    with pytest.raises(Exception, match=r"skip\(\.\.\.\) \(traced at .*test_skip.py.*not computed"):
        with model.trace(torch.randn(3, 8)):
            model[2].skip(model[4].output)
    assert "forward" not in net[2].__dict__


def test_skip_in_a_batch_of_several_invokes_is_refused() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match="2 invokes"):
        with model.trace() as tracer:
            with tracer.invoke(torch.randn(1, 8)):
                model[2].skip(torch.zeros(1, 8))
            with tracer.invoke(torch.randn(1, 8)):
                pass


def test_skip_a_gpt2_block() -> None:
    pytest.importorskip("transformers")
    from test_transformers import gpt2

    net = gpt2()
    ids = torch.randint(1, 100, (1, 6))
    model = NNsight(net)
    with model.trace(ids):
        hidden = model.transformer.h[0].output
        model.transformer.h[1].skip(hidden)
        logits = model.lm_head.output.save()

    def identity(module: torch.nn.Module, args: tuple[torch.Tensor, ...], out: object) -> object:
        # The block's output structure (a tuple in transformers 4, a tensor in 5), its input.
        return (args[0], *out[1:]) if isinstance(out, tuple) else args[0]

    handle = net.transformer.h[1].register_forward_hook(identity)
    try:
        with torch.no_grad():
            expected = net(ids).logits
    finally:
        handle.remove()
    assert torch.allclose(logits.value, expected, atol=1e-6)
