"""Several invokes in one trace: one batched forward pass, each invoke's interventions on its
own rows only, and proxies shared across invokes (activation patching)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import hooked, mlp, outputs_of

from nnsight import ExecutionError, NNsight, TracingError


class CountingForward(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.inner(x)


def test_invokes_run_as_one_batch_and_see_only_their_rows() -> None:
    net = CountingForward(mlp())
    model = NNsight(net)
    a, b = torch.randn(2, 8), torch.randn(3, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.output.save()
            hidden_a = model.inner[0].output.save()
        with tracer.invoke(b):
            out_b = model.output.save()
            model.inner[1].output[:] = 0  # only b's rows
    assert net.calls == [5]
    assert torch.allclose(out_a.value, net.inner(a))
    assert torch.allclose(hidden_a.value, net.inner[0](a))
    with torch.no_grad(), hooked(net.inner[1], lambda m, i, o: torch.zeros_like(o)):
        assert torch.allclose(out_b.value, net.inner(b))


def test_patching_between_invokes_matches_hooks() -> None:
    net = mlp()
    model = NNsight(net)
    clean, corrupt = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(clean):
            clean_hidden = model[2].output
        with tracer.invoke(corrupt):
            model[2].output[:, :4] = clean_hidden[:, :4]
            patched = model.output.save()
    kept = outputs_of(net, [net[2]], clean)[0][0]

    def patch(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, :4] = kept[:, :4]
        return out

    with torch.no_grad(), hooked(net[2], patch):
        assert torch.allclose(patched.value, net(corrupt))


def test_swapping_one_invokes_rows_keeps_the_others() -> None:
    net = mlp()
    model = NNsight(net)
    a, b = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.output.save()
        with tracer.invoke(b):
            model[0].output = torch.ones(2, 8)
            out_b = model.output.save()
    with torch.no_grad():
        assert torch.allclose(out_a.value, net(a))
        with hooked(net[0], lambda m, i, o: torch.ones(2, 8)):
            assert torch.allclose(out_b.value, net(b))


def test_swap_with_the_wrong_batch_size_raises_at_the_users_line() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match=r"batch size 3 but this invoke has 2.*truncated"):
        with model.trace() as tracer:
            with tracer.invoke(torch.randn(2, 8)):
                model[0].output = torch.ones(3, 8)
            with tracer.invoke(torch.randn(1, 8)):
                pass
    # Unknown at trace time (a proxy of unknown shape): refused when the swap is applied.
    with pytest.raises(
        ExecutionError, match=r"test_invokes.py:\d+\): the new value has batch size 4"
    ):
        with model.trace(scan=False) as tracer:
            with tracer.invoke(torch.randn(2, 8)):
                model[0].output = model[0].output.repeat(2, 1)
            with tracer.invoke(torch.randn(1, 8)):
                pass


def test_invoke_inputs_that_cannot_batch_raise() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match="cannot be batched"):
        with model.trace() as tracer:
            with tracer.invoke(torch.randn(2, 8)):
                pass
            with tracer.invoke(torch.randn(2, 5)):
                pass


def test_replacing_an_input_changes_only_that_invokes_rows() -> None:
    net = mlp()
    model = NNsight(net)
    a, b = torch.randn(2, 8), torch.randn(3, 8)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model.output.save()
        with tracer.invoke(b):
            (x,), _ = model[2].input
            model[2].input = ((x * 0,), {})
            out_b = model.output.save()
    with torch.no_grad():
        assert torch.allclose(out_a.value, net(a))
        handle = net[2].register_forward_pre_hook(lambda m, args: (args[0] * 0,))
        try:
            assert torch.allclose(out_b.value, net(b))
        finally:
            handle.remove()


class Shifted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + shift


def test_one_tensor_passed_by_every_invoke_is_shared_not_batched() -> None:
    net = Shifted()
    model = NNsight(net)
    shift = torch.randn(4)  # one object, passed by both invokes
    a, b = torch.randn(2, 4), torch.randn(3, 4)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(a, shift=shift):
            out_a = model.output.save()
        with tracer.invoke(b, shift=shift):
            out_b = model.output.save()
    with torch.no_grad():
        assert torch.allclose(out_a.value, net(a, shift))
        assert torch.allclose(out_b.value, net(b, shift))
