"""Where nnsight 0.2 was silently wrong, we raise at the user's line; a failing run leaves the
model clean and reusable."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from model_helpers import Reuse, hook_count, mlp

from nnsight import ExecutionError, NNsight, TracingError

HERE = "test_model_errors.py:"


def test_an_unsaved_proxy_from_an_earlier_trace_raises() -> None:
    model = NNsight(mlp())
    x = torch.randn(2, 8)
    with model.trace(x):
        stale = model[0].output * 2  # not saved: freed when its trace ended
    with pytest.raises(TracingError, match=rf"at .*{HERE}\d+: proxy 'mul_0' .*was not saved"):
        with model.trace(x):
            model[0].output = stale


def test_truth_value_of_a_proxy_raises() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match="truth value"):
        with model.trace(torch.randn(2, 8)):
            if model[0].output.sum() > 0:
                pass


def test_iterating_a_proxy_of_unknown_length_raises_but_unpacking_known_tuples_works() -> None:
    model = NNsight(Reuse())
    x = torch.randn(2, 6)
    with pytest.raises(TracingError, match="needs its length"):
        with model.trace(x, scan=False):
            for _ in model.shared.output:
                pass
    with model.trace(x):
        (args, _kwargs) = model.shared.input
        first = args[0].save()
        rows = [row.save() for row in model.shared.output]  # length 2 from the scan
    assert torch.equal(first.value, x)
    assert len(rows) == 2


@pytest.mark.parametrize("kind, invokes", [("output", 1), ("output", 2), ("input", 1)])
def test_next_past_the_last_call_names_the_module_and_call(kind: str, invokes: int) -> None:
    # Each way a read is hooked: the core's output hook, its fallback for several invokes'
    # rows, and a Python input hook.
    model = NNsight(Reuse())
    with pytest.raises(TracingError, match=rf"model.shared.{kind} of call 2 .*ran 2 time\(s\)"):
        with model.trace() as tracer:
            for _ in range(invokes):
                with tracer.invoke(torch.randn(2, 6)):
                    getattr(model.shared.next().next(), kind).save()
    assert hook_count(model._model) == 0


def test_module_paths_that_do_not_exist_raise() -> None:
    model = NNsight(mlp())
    with pytest.raises(AttributeError, match="has no submodule or attribute 'decoder'"):
        with model.trace(torch.randn(2, 8)):
            model.decoder.output.save()


def test_output_outside_an_invoke_or_a_trace_raises() -> None:
    model = NNsight(mlp())
    with pytest.raises(
        TracingError, match=rf"model\[0\].output read outside an invoke at .*{HERE}"
    ):
        with model.trace():
            model[0].output.save()
    with pytest.raises(TracingError, match=rf"outside a trace at .*{HERE}"):
        model[0].output.save()


def test_nested_invokes_and_traces_raise() -> None:
    model = NNsight(mlp())
    x = torch.randn(2, 8)
    with pytest.raises(TracingError, match=rf"invokes cannot be nested, at .*{HERE}"):
        with model.trace() as tracer, tracer.invoke(x), tracer.invoke(x):
            pass
    with pytest.raises(TracingError, match="already opens one"):
        with model.trace(x) as tracer, tracer.invoke(x):
            pass
    with pytest.raises(TracingError, match="traces cannot be nested"):
        with model.trace(x), model.trace(x):
            pass
    with model.trace(x):  # the model is usable again
        ok = model.output.save()
    assert ok.shape == (2, 2)


def test_an_error_in_the_run_names_the_node_removes_hooks_and_leaves_the_model_reusable() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with pytest.raises(ExecutionError, match=rf"(?s)node 'matmul_0'.*RuntimeError.*{HERE}") as info:
        with model.trace(x):
            hidden = model[0].output.save()
            (hidden @ torch.ones(3, 3)).save()  # wrong shape: raises during the forward pass
    assert isinstance(info.value.__cause__, RuntimeError)
    assert hook_count(net) == 0
    with pytest.raises(ValueError, match="no value"):
        hidden.value  # nothing half-set
    with model.trace(x):
        out = model.output.save()
    assert torch.allclose(out.value, net(x))


@pytest.mark.local_only("looks at the values of the local graph after the error")
def test_an_error_raised_by_the_model_itself_removes_hooks_and_frees_values() -> None:
    class Boom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("model failure")

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), Boom())
    model = NNsight(net)
    x = torch.randn(2, 4)
    with pytest.raises(KeyError, match="model failure") as info:
        with model.trace(x):
            saved = model[0].output.save()
    assert any("while running the trace" in note for note in info.value.__notes__)
    assert hook_count(net) == 0
    with pytest.raises(ValueError, match="no value"):
        saved.value
    del info
    ref = weakref.ref(saved.node.graph) if saved.node._graph_ref() else None
    del saved
    gc.collect()
    assert ref is None or ref() is None


def test_validate_reports_shape_errors_at_the_users_line_before_running() -> None:
    from nnsight import ValidationError

    net = mlp()
    model = NNsight(net)
    calls: list[int] = []
    net.register_forward_pre_hook(lambda m, a: calls.append(1))
    with pytest.raises(ValidationError, match=rf"matmul.*{HERE}"):
        with model.trace(torch.randn(2, 8), validate=True):
            model[0].output @ torch.ones(3, 3)
    assert calls == [1]  # the scan's fake forward only: the real model never ran
    net._forward_pre_hooks.clear()
    with model.trace(torch.randn(2, 8), validate=True):
        shape = (model[0].output @ torch.ones(8, 3)).shape
    assert shape == (2, 3)


@pytest.mark.parametrize("invokes", [1, 2])
def test_a_swap_that_needs_a_later_module_raises_and_leaves_no_hooks(invokes: int) -> None:
    # model[0]'s output cannot be replaced by model[2]'s: that exists only after model[0] ran.
    # One invoke takes the hook's whole-batch path, two the per-invoke one.
    model = NNsight(mlp())
    with pytest.raises(ExecutionError, match=r"became ready at model\[2\]\.output .*does not"):
        with model.trace() as tracer:
            for _ in range(invokes):
                with tracer.invoke(torch.randn(2, 8)):
                    model[0].output = model[2].output
    assert hook_count(model._model) == 0
    x = torch.randn(2, 8)
    with model.trace(x):  # the model is usable at once
        out = model.output.save()
    assert torch.equal(out.value, model._model(x))


def test_remote_options_are_never_passed_to_the_model() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with pytest.raises(TracingError, match="remote='<the name"):  # a module has no key
        with model.trace(x, remote=True):
            model.output.save()
    for options in ({"backend": "ray"}, {"remote": "w", "blocking": False}):
        with pytest.raises(NotImplementedError):
            model.trace(x, **options)
    with pytest.raises(TypeError, match="invoker_args"):
        model.trace(x, invoker_args={"scan": False})
    assert hook_count(net) == 0
    with model.trace(x, remote=False, blocking=True) as tracer:  # local: accepted, not passed
        out = model.output.save()
    assert torch.equal(out.value, net(x)) and torch.equal(tracer.output, net(x))
