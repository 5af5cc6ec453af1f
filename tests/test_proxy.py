"""Proxy operators, indexing, attributes, calls and torch functions, each checked against the
same computation done eagerly in PyTorch."""

from __future__ import annotations

import operator
from typing import Any

import pytest
import torch

from nnsight import Graph, Node, Proxy, TracingError, ValidationError, proxy_wrapper


def run(build, value: Any, validate: bool = True) -> Any:
    """Traces ``build(proxy)`` against a root whose proxy value is ``value``, runs it, and
    returns the saved result."""
    graph = Graph(value, validate=validate)
    out = build(graph.module_proxy)
    out.save()
    graph.compile(value)
    return out.value


X = torch.arange(1.0, 7.0).reshape(2, 3)

BINARY = [
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.mod,
    operator.pow,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
]


@pytest.mark.parametrize("op", BINARY, ids=lambda op: op.__name__)
@pytest.mark.parametrize("validate", [True, False])
def test_binary_and_reflected_operators_match_torch(op, validate: bool) -> None:
    assert torch.equal(run(lambda p: op(p, 2.0), X, validate), op(X, 2.0))
    assert torch.equal(run(lambda p: op(3.0, p), X, validate), op(3.0, X))


@pytest.mark.parametrize(
    "op", [operator.and_, operator.or_, operator.xor, operator.lshift, operator.rshift]
)
def test_integer_operators(op) -> None:
    ints = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert torch.equal(run(lambda p: op(p, 1), ints), op(ints, 1))
    assert torch.equal(run(lambda p: op(7, p), ints), op(7, ints))


def test_matmul_and_unary_operators() -> None:
    w = torch.randn(3, 4)
    assert torch.allclose(run(lambda p: p @ w, X), X @ w)
    assert torch.allclose(run(lambda p: w.T @ p.T, X), w.T @ X.T)
    assert torch.equal(run(lambda p: -p, X), -X)
    assert torch.equal(run(lambda p: +p, X), +X)
    assert torch.equal(run(lambda p: abs(p - 3), X), abs(X - 3))
    ints = torch.tensor([1, 2])
    assert torch.equal(run(lambda p: ~p, ints), ~ints)


def test_getitem_setitem_and_slices() -> None:
    assert torch.equal(run(lambda p: p[:, 1:], X), X[:, 1:])
    assert torch.equal(run(lambda p: p[1], X), X[1])

    def edit(p: Proxy) -> Proxy:
        p[:, 0] = 0
        return p

    expected = X.clone()
    expected[:, 0] = 0
    assert torch.equal(run(edit, X.clone()), expected)


def test_slice_bounds_from_proxies() -> None:
    values = torch.arange(10)
    graph = Graph(None, validate=False)
    start = graph.add(target="argument", value=2, args=["start"])
    out = graph.add(target=operator.getitem, args=[values, slice(start, None)]).save()
    graph.compile(None)
    graph.nodes[graph.argument_node_names["start"][0]].set_value(4)
    assert torch.equal(out.value, values[4:])


def test_attributes_methods_and_calls() -> None:
    assert run(lambda p: p.shape, X) == X.shape
    assert torch.equal(run(lambda p: p.sum(dim=1), X), X.sum(dim=1))
    assert torch.equal(run(lambda p: p.T.reshape(-1), X), X.T.reshape(-1))

    class Box:
        def __init__(self) -> None:
            self.scale = 1

    def set_scale(p: Proxy) -> Proxy:
        p.scale = 5
        return p.scale

    assert run(set_scale, Box(), validate=False) == 5
    assert run(lambda p: p(2, k=3), lambda a, k: a * k, validate=False) == 6


def test_torch_functions_including_kwargs_only_and_nested_proxies() -> None:
    assert torch.equal(run(lambda p: torch.sum(input=p), X), torch.sum(input=X))
    assert torch.equal(run(lambda p: torch.cat([p, p * 2], dim=0), X), torch.cat([X, X * 2]))
    assert torch.allclose(
        run(lambda p: torch.nn.functional.softmax(p, dim=-1), X),
        torch.nn.functional.softmax(X, dim=-1),
    )
    assert torch.equal(run(lambda p: torch.where(p > 3, p, 0.0), X), torch.where(X > 3, X, 0.0))
    assert torch.equal(run(lambda p: torch.add(p, other=1, alpha=2), X), torch.add(X, 1, alpha=2))


def test_proxy_wrapper_traces_only_when_given_proxies() -> None:
    arange = proxy_wrapper(torch.arange)
    assert torch.equal(arange(3), torch.arange(3))
    graph = Graph(None, validate=False)
    n = graph.add(target="argument", value=None, args=["n"])
    out = arange(n).save()
    assert out.node.name == "arange_0"
    graph.compile(None)
    graph.nodes[n.node.name].set_value(4)
    assert torch.equal(out.value, torch.arange(4))


def test_len_and_iteration_use_the_known_length() -> None:
    graph = Graph((torch.ones(2), torch.zeros(3)))
    a, b = graph.module_proxy
    assert len(graph.module_proxy) == 2
    a.save(), b.save()
    graph.compile((torch.ones(2), torch.zeros(3)))
    assert torch.equal(a.value, torch.ones(2)) and torch.equal(b.value, torch.zeros(3))


def test_unknown_length_bool_and_int_raise_clear_errors() -> None:
    graph = Graph(None, validate=False)
    proxy = graph.module_proxy + 1
    with pytest.raises(TracingError, match="length, which is not known"):
        len(proxy)
    with pytest.raises(TracingError, match="length"):
        iter(proxy)
    with pytest.raises(TracingError, match="truth value of proxy 'add_0'"):
        if proxy:
            pass
    with pytest.raises(TracingError, match="truth value"):
        while proxy:
            pass
    with pytest.raises(TracingError):
        int(proxy)
    with pytest.raises(TracingError):
        range(proxy)
    with pytest.raises(TracingError):
        1 in proxy
    scalar = Graph(torch.tensor(1.0)).module_proxy
    with pytest.raises(TracingError, match="length"):
        list(scalar)


def test_str_and_repr_never_ask_for_truth_values() -> None:
    class NoBool:
        def __bool__(self) -> bool:
            raise AssertionError("asked for truth value")

        def __repr__(self) -> str:
            return "NoBool()"

    graph = Graph(NoBool())
    proxy = graph.module_proxy
    assert "NoBool()" in str(proxy) and "argument_0" in repr(proxy)
    tensor_graph = Graph(torch.ones(2, 3))
    tensor_proxy = tensor_graph.module_proxy * 2
    assert str(tensor_proxy) == (
        "Proxy (mul_0): Tensor(shape=(2, 3), dtype=torch.float32, device=cpu)"
    )
    assert f"{tensor_proxy}" == str(tensor_proxy)


def test_proxies_hash_by_identity_and_skip_dunder_attributes() -> None:
    graph = Graph(None, validate=False)
    proxy = graph.module_proxy
    assert {proxy: 1}[proxy] == 1
    assert not hasattr(proxy, "__array_interface__")
    assert len(graph.nodes) == 1


@pytest.mark.parametrize("validate", [True, False])
def test_proxies_of_two_graphs_cannot_mix(validate: bool) -> None:
    # validate=False takes the operators' one-call path (GraphCore.add_op), which must
    # decline and leave the error to Graph.add.
    graphs = Graph(torch.ones(2), validate=validate), Graph(torch.ones(2), validate=validate)
    first, second = (graph.module_proxy for graph in graphs)
    with pytest.raises(TracingError, match="belongs to another graph"):
        first + second
    assert [len(graph.nodes) for graph in graphs] == [1, 1]
    with pytest.raises(TracingError, match="mixes proxies of two graphs"):
        torch.add(first, second)


def test_operators_build_proxies_of_the_graphs_proxy_class() -> None:
    # A proxy class with an __init__ of its own gets it called for operator results too;
    # one without gets its instances made by the core. Switching validation on and off
    # between adds keeps both paths in step.
    class Tagged(Proxy):
        made = 0

        def __init__(self, node: Node) -> None:
            super().__init__(node)
            Tagged.made += 1

    class Plain(Proxy):
        pass

    graph = Graph(torch.ones(2), proxy_class=Tagged, validate=False)
    doubled = graph.module_proxy * 2
    assert type(doubled) is Tagged and Tagged.made == 2  # the root's proxy, then doubled's
    graph.proxy_class = Plain
    tripled = -doubled * 3
    assert type(tripled) is Plain and Tagged.made == 2
    graph.validate = True  # validated again: a shape error raises when the op is added
    with pytest.raises(ValidationError, match="matmul"):
        graph.module_proxy @ torch.ones(3, 3)
    graph.validate = False
    graph.add("null", None, [tripled])
    graph.compile(torch.ones(2))
    assert torch.equal(tripled.value, torch.full((2,), -6.0))


def test_proxy_subclasses_with_slots_or_a_dict_keep_their_node() -> None:
    # The core reads and writes a proxy's `_core` and `_id` at the offsets of Proxy's own
    # slots, which subclasses inherit whatever they add (more slots, or a __dict__).
    class Slotted(Proxy):
        __slots__ = ("tag",)

    class WithDict(Proxy):
        pass

    for cls in (Slotted, WithDict):
        graph = Graph(torch.ones(2), proxy_class=cls, validate=False)
        out = (graph.module_proxy + 1) * 3
        assert type(out) is cls
        first = out.node.args[0]  # the node is found through the slots
        assert first.target is operator.add and first.args[0] is graph.module_proxy.node
        graph.add("null", None, [out])
        graph.compile(torch.ones(2))
        assert torch.equal(out.value, torch.full((2,), 6.0))
