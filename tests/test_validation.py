"""Trace-time validation on fake tensors."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

from nnsight import Graph, ValidationError


def test_proxy_values_carry_shapes_dtypes_and_devices() -> None:
    graph = Graph(torch.nn.Linear(4, 3))
    x = graph.add(target="argument", value=torch.ones(5, 4), args=["x"])
    y = graph.module_proxy(x)
    z = torch.softmax(y.half(), dim=-1)
    assert isinstance(y.node.proxy_value, FakeTensor)
    assert z.node.proxy_value.shape == (5, 3) and z.node.proxy_value.dtype == torch.float16
    assert z.node.proxy_value.device == torch.device("cpu")


def test_shape_error_names_the_op_and_user_line_and_leaves_graph_unchanged() -> None:
    graph = Graph(torch.ones(2, 3))
    ok = graph.module_proxy * 2
    before = (list(graph.nodes), graph.name_idx)
    with pytest.raises(ValidationError) as info:
        ok @ torch.ones(4, 5)  # shape error on this line
    line = inspect.currentframe().f_lineno - 1
    message = str(info.value)
    assert message.startswith("matmul(Tensor(shape=(2, 3)")
    assert f"{__file__}:{line}" in message
    assert "RuntimeError: " in message and "[2, 3]" in message and "[4, 5]" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert (list(graph.nodes), graph.name_idx) == before
    later = ok + 1  # the graph goes on as if nothing happened
    assert later.node.name == "add_0"


def test_validation_off_defers_errors_to_execution() -> None:
    graph = Graph(torch.ones(2, 3), validate=False)
    bad = graph.module_proxy @ torch.ones(4, 5)
    assert bad.node.proxy_value is inspect._empty


def test_one_fake_mode_per_graph() -> None:
    graph = Graph(torch.ones(2))
    graph.module_proxy + 1
    mode = graph._fake.mode
    graph.module_proxy * 3
    assert graph._fake.mode is mode
    assert Graph(torch.ones(2))._fake._mode is None  # made lazily, on first validated op


def test_fake_values_never_leak_into_real_results_or_constants() -> None:
    constant = torch.ones(2, 3)
    graph = Graph(torch.ones(2, 3))
    x = graph.module_proxy
    edited = graph.add(target=torch.Tensor.add_, args=[constant, x])  # in-place on a constant
    out = (x * 2).save()
    edited.save()
    assert torch.equal(constant, torch.ones(2, 3)), "validation must not touch real tensors"
    graph.compile(torch.full((2, 3), 5.0))
    assert type(out.value) is torch.Tensor and torch.equal(out.value, torch.full((2, 3), 10.0))
    assert type(edited.value) is torch.Tensor and torch.equal(constant, torch.full((2, 3), 6.0))


def test_data_dependent_ops_get_unknown_proxy_values_but_run() -> None:
    graph = Graph(torch.tensor([0.0, 2.0, 0.0, 3.0]))
    nz = torch.nonzero(graph.module_proxy)
    item = graph.module_proxy.sum().item()
    after = (nz * 1).save()
    item.save()
    fake = after.node.proxy_value
    assert fake is inspect._empty or isinstance(fake, FakeTensor)
    graph.compile(torch.tensor([0.0, 2.0, 0.0, 3.0]))
    assert torch.equal(after.value, torch.tensor([[1], [3]]))
    assert item.value == 5.0


def test_prepare_proxy_values_replaces_proxies_and_moves_to_meta() -> None:
    from nnsight import Node

    graph = Graph(torch.ones(2))
    p = graph.module_proxy * 2
    nested = [p, {"k": (p.node, torch.zeros(1))}, slice(p, None)]
    values = Node.prepare_proxy_values(nested, device=None)
    assert values[0] is p.node.proxy_value and values[1]["k"][0] is p.node.proxy_value
    assert values[2].start is p.node.proxy_value
    moved = Node.prepare_proxy_values(nested)  # to 'meta' by default, as documented
    assert moved[0].device.type == "meta" and tuple(moved[0].shape) == (2,)
    assert moved[1]["k"][1].device.type == "meta" and moved[2].start.device.type == "meta"
