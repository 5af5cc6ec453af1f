"""NNsight on plain nn.Modules: saving, editing, swapping, inputs, .next(), the envoy tree.
Every result is checked against plain PyTorch (forward hooks or a manual forward)."""

from __future__ import annotations

import sys

import pytest
import torch
from model_helpers import Reuse, hook_count, hooked, mlp, outputs_of

from nnsight import NNsight
from nnsight.errors import TracingError
from nnsight.intervention import SavedProxy


def test_saved_outputs_match_forward_hooks() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(4, 8)
    with model.trace(x):
        first = model[0].output.save()
        relu = model[3].output.save()
        out = model.output.save()
    expected = outputs_of(net, [net[0], net[3], net], x)
    assert torch.equal(first.value, expected[0][0])
    assert torch.equal(relu.value, expected[1][0])
    assert torch.equal(out.value, expected[2][0])


def test_tracer_output_is_what_the_edited_run_returned() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(4, 8)
    with model.trace(x) as tracer:
        assert tracer.output is None  # not run yet
        model[1].output[:] = 0
    expected = net[2:](torch.zeros(4, net[0].out_features))
    assert torch.allclose(tracer.output, expected)


def test_in_place_edit_changes_the_live_activation() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(4, 8)
    with model.trace(x):
        model[1].output[:, 0] = 0
        edited = model[1].output.save()
        out = model.output.save()

    def zero_first(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, 0] = 0
        return out

    with torch.no_grad(), hooked(net[1], zero_first):
        expected = net(x)
    assert torch.allclose(out.value, expected)
    assert torch.all(edited.value[:, 0] == 0)


def test_swapping_a_whole_output_replaces_it() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(4, 8)
    with model.trace(x):
        model[2].output = model[2].output * 2 + 1
        after = model[2].output.save()
        out = model.output.save()
    with torch.no_grad(), hooked(net[2], lambda m, a, o: o * 2 + 1):
        expected = net(x)
    assert torch.allclose(out.value, expected)
    assert torch.allclose(after.value, outputs_of(net, [net[2]], x)[0][0] * 2 + 1)


def test_input_is_args_and_kwargs_and_can_be_replaced() -> None:
    net = Reuse()
    model = NNsight(net)
    x = torch.randn(2, 6)
    with model.trace(x, scale=0.5):
        args, kwargs = model.input
        seen_x = args[0].save()
        seen_scale = kwargs["scale"].save()
        (out_args, _) = model.out.input
        model.out.input = ((out_args[0] * 0,), {})
        out = model.output.save()
    assert torch.equal(seen_x.value, x)
    assert seen_scale.value == 0.5
    assert torch.equal(out.value, net.out.bias.expand(2, 3))


def test_next_addresses_later_calls_of_a_reused_module() -> None:
    net = Reuse()
    model = NNsight(net)
    x = torch.randn(2, 6)
    with model.trace(x):
        first = model.shared.output.save()
        second = model.shared.next().output.save()
        model.shared.output[:] = 0  # still the second call: next() sticks
    calls = outputs_of(net, [net.shared], x)[0]
    assert torch.equal(first.value, calls[0])
    assert torch.all(second.value == 0)  # the in-place edit reached the saved view
    with torch.no_grad(), model.trace(x) as tracer:
        tracer.next()
        late = model.shared.output.save()
    assert torch.allclose(late.value, calls[1])


def test_each_invoke_starts_at_the_first_call() -> None:
    # As in nnsight 0.2: .next() moves the module's call within one invoke only.
    net = Reuse()
    model = NNsight(net)
    a, b = torch.randn(2, 6), torch.randn(3, 6)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(a):
            second_a = model.shared.next().output.save()
        with tracer.invoke(b):
            first_b = model.shared.output.save()
            second_b = model.shared.next().output.save()
    calls = outputs_of(net, [net.shared], torch.cat([a, b]))[0]
    assert torch.allclose(second_a.value, calls[1][:2])
    assert torch.allclose(first_b.value, calls[0][2:])
    assert torch.allclose(second_b.value, calls[1][2:])


def test_tracer_apply_and_torch_functions_trace() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x) as tracer:
        h = model[0].output
        total = tracer.apply(torch.sum, torch.relu(h), dim=1).save()
        top = h.softmax(-1).argmax(-1).save()
    h_plain = net[0](x)
    assert torch.allclose(total.value, torch.relu(h_plain).sum(1))
    assert torch.equal(top.value, h_plain.softmax(-1).argmax(-1))


def test_shapes_are_known_while_tracing_from_a_cached_scan() -> None:
    net = Reuse()
    model = NNsight(net)
    shapes = []
    for _ in range(3):
        with model.trace(torch.randn(5, 6)):
            shapes.append((model.out.output.shape, model.shared.output.dtype))
            assert len(model.out.output) == 5
    assert shapes == [(torch.Size([5, 3]), torch.float32)] * 3
    assert model._scanner.runs == 1  # one fake forward for three traces of one signature
    with model.trace(torch.randn(2, 6)):
        assert model.out.output.shape == (2, 3)
    assert model._scanner.runs == 2


def test_traces_that_read_no_shape_run_no_scan() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)):
        model[0].output.save()
    assert model._scanner.runs == 0


@pytest.mark.local_only("values travel as data, without their autograd history")
def test_saved_proxy_behaves_like_its_value_after_the_block() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x):
        h = model[0].output.save()
    plain = net[0](x)
    assert isinstance(h, SavedProxy)
    assert torch.equal(h + 1, plain + 1) and torch.equal(2 * h, 2 * plain)
    assert torch.equal(torch.sum(h, 0), plain.sum(0))
    assert h.shape == plain.shape and len(h) == 3 and h[0].shape == (8,)
    assert torch.equal(h.mean(), plain.mean())
    assert str(h) == str(plain)
    # ... and is a constant in a later trace.
    with torch.no_grad(), model.trace(x):
        model[0].output = h * 0
        out = model.output.save()
    with torch.no_grad(), hooked(net[0], lambda m, a, o: o * 0):
        assert torch.allclose(out.value, net(x))


def test_envoys_mirror_the_module_tree_and_forward_attributes() -> None:
    net = mlp(depth=2)
    model = NNsight(net)
    assert len(model) == len(net) == 5
    assert [e._module for e in model] == list(net)
    assert model[-1]._module is net[4]
    assert model[0].weight is net[0].weight  # attributes are the real module's
    with pytest.raises(IndexError, match="out of range"):
        model[9]
    with pytest.raises(AttributeError, match="no submodule or attribute 'nope'"):
        model.nope
    assert model.trace(torch.ones(1, 8), trace=False).shape == (1, 2)


def test_only_used_modules_get_hooks_and_only_during_the_run() -> None:
    net = mlp()
    model = NNsight(net)
    seen: list[int] = []

    def count(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        seen.append(hook_count(net))

    with hooked(net[4], count):  # a plain hook of our own, to look from inside the run
        with model.trace(torch.randn(2, 8)):
            model[2].output.save()
            model[0].output * 2  # read but never used: dead, so net[0] gets no hook
    assert seen == [2]  # ours + nnsight's one hook on net[2], nothing on the other modules
    assert hook_count(net) == 0


def test_a_module_read_at_two_paths_gets_a_hook_per_path() -> None:
    # The core's output hook takes each module once; a second path to the same module (one
    # module in two containers) gets a Python hook of its own. Both see every call.
    shared = torch.nn.Linear(8, 8)
    net = torch.nn.Sequential(
        torch.nn.Sequential(shared), torch.nn.Sequential(shared, torch.nn.ReLU())
    )
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.trace(x):
        first = model[0][0].output.save()
        alias = model[1][0].output.save()  # call 0 at this path too: shared's first call
        assert alias.shape == (2, 8)  # the scan knows the module at both paths
        model[1][0].output[:, 0] = 5.0  # an edit through the Python hook reaches the model
        out = model.output.save()
    with torch.no_grad():
        expected = shared(x)
        expected[:, 0] = 5.0
        expected_out = torch.relu(shared(expected))
    assert torch.equal(first, expected) and torch.equal(alias, expected)
    assert torch.allclose(out, expected_out)
    assert hook_count(net) == 0


def test_print_graph_lists_names_targets_args_and_lines() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        (model[0].output * 3).save()
    text = str(tracer.graph)
    assert "%mul_0 = mul(%argument_1, 3)" in text
    assert "test_model_trace.py:" in text


def test_envoy_reads_and_saves_are_nodes_at_the_users_line() -> None:
    # `.output` and `.save()` are recorded by the core in one call each: the nodes must be
    # what `graph.add("argument", ...)` and `graph.add("null", ...)` would have made.
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        line = sys._getframe().f_lineno + 1
        hidden = model[2].output.save()
        unsaved = model[0].output
    graph = tracer.graph
    read, save = graph.nodes["argument_1"], graph.nodes["null_0"]
    assert (read.target, read.args) == ("argument", [".2.output.0", 2, 0])
    assert (save.target, save.args) == ("null", [read])
    assert read.source == save.source == (__file__, line)
    assert graph.argument_node_names[".2.output.0"] == ["argument_1"]
    assert hidden.shape == (2, 8)  # saved: its value
    with pytest.raises(TracingError, match=r"test_model_trace.py:\d+: proxy model\[0\].output"):
        unsaved.save()  # the trace is over: nothing is added
    assert len(graph.nodes) == 4 and "null_1" not in graph.nodes


class PairOut(torch.nn.Module):
    """A module with a tuple output, as GPT-2 blocks have in transformers 4.x."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(-1)


class PairNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = PairOut()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        doubled, total = self.pair(x)
        return doubled + total[:, None]


def test_unpacking_a_tuple_output_and_swapping_it_per_invoke() -> None:
    net = PairNet()
    model = NNsight(net)
    a, b = torch.randn(2, 3), torch.randn(1, 3)
    with model.trace() as tracer:
        with tracer.invoke(a):
            new, *rest = model.pair.output  # length known from the scan
            model.pair.output = (new * 0, *rest)
            out_a = model.output.save()
        with tracer.invoke(b):
            out_b = model.output.save()
    with hooked(net.pair, lambda m, i, o: (o[0] * 0, *o[1:])):
        assert torch.allclose(out_a.value, net(a))
    assert torch.allclose(out_b.value, net(b))


def test_module_methods_that_return_self_return_the_wrapper() -> None:
    net = mlp()
    model = NNsight(net)
    for moved in (model.to(torch.float64), model.double(), model.eval(), model.train(False)):
        assert moved is model
    assert next(net.parameters()).dtype == torch.float64 and not net.training
    x = torch.randn(2, 8, dtype=torch.float64)
    with model.trace(x):  # the scan sees the new dtype
        dtype = model[0].output.dtype
        out = model.output.save()
    assert dtype == torch.float64 and torch.equal(out.value, net(x))
    assert model.float() is model and next(net.parameters()).dtype == torch.float32


def test_printing_the_wrapper_shows_the_module_tree() -> None:
    net = mlp()
    assert repr(NNsight(net)) == repr(net)


def test_a_saved_tensor_passes_isinstance_checks_for_its_value_type() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)):
        out = model.output.save()
        pair = model.input.save()
    assert type(out) is SavedProxy and isinstance(out, SavedProxy)
    assert isinstance(out, torch.Tensor) and not isinstance(out, tuple)
    assert isinstance(pair, tuple) and isinstance(pair, SavedProxy)


def test_a_saved_value_of_an_earlier_trace_can_be_the_input_of_the_next() -> None:
    net = mlp()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.trace(x):
        hidden = model[1].output.save()
    with model.trace(hidden):  # a SavedProxy as the input: scanned and run on its value
        shape = model[2].output.shape
        out = model[2].output.save()
    assert shape == (2, 8) and torch.equal(out.value, net[:3](hidden.value))


def test_saving_the_same_value_twice_is_one_saved_value() -> None:
    net = torch.nn.Linear(2, 2)
    x = torch.randn(1, 2)
    model = NNsight(net)
    with model.trace(x):
        first = model.output.save()
        second = model.output.save()  # the same read: the same proxy, saved again
    assert first is second and torch.equal(second.value, net(x))
