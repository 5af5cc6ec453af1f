"""The graph wire format: round trips run to the same values, graphs that hold code are refused
at dumps, and hostile or broken bytes are refused at loads without running anything."""

from __future__ import annotations

import builtins
import operator
import os
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_helpers import mlp

from nnsight import Graph, NNsight, SerializationError
from nnsight.serialization import FORMAT_VERSION, MAGIC, dumps, loads, pack
from nnsight.tracing.Proxy import proxy_call

pytest.importorskip("msgspec")
pytest.importorskip("safetensors")


def run(graph: Graph, module: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every saved value of ``graph`` after setting its argument ``x``, by node name."""
    graph.compile(module)
    graph.nodes[graph.argument_node_names["x"][0]].set_value(x)
    return {
        name: node.value
        for name, node in graph.nodes.items()
        if node.target == "null" and node.args[0].done()
        for node in [node.args[0]]
    }


def assert_same(a: object, b: object) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)  # type: ignore[arg-type]
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()  # type: ignore[attr-defined]
        for key in a:
            assert_same(a[key], b[key])  # type: ignore[index]
    else:
        assert a == b


def corpus(module: torch.nn.Module) -> list[Graph]:
    """Graphs with every kind of node and value the format spells."""
    graphs = []
    g = Graph(module, validate=False)
    x = g.add(target="argument", value=None, args=["x"])
    h = g.module_proxy[0](x)  # a submodule, called
    (h.relu()[:, 1:3] * 2 + torch.ones(2)).sum(dim=-1, keepdim=True).save()
    torch.cat([h, h], dim=0).to(torch.float64).save()
    h[..., None].shape.save()  # Ellipsis, None, a Size
    torch.stack([h, h * -1.5]).transpose(0, 1).reshape(torch.Size([-1])).save()
    torch.where(h > 0, h, torch.zeros(1, dtype=torch.float32)).mean().save()
    g.add(operator.getitem, args=[[h, (h, {"k": h})], 1]).save()  # nested containers
    g.add(operator.add, args=[h, 1], name="named_by_hand").save()  # an explicit name
    graphs.append(g)
    g = Graph(module, validate=False)
    x = g.add(target="argument", value=None, args=["x"])
    value = x
    for _ in range(300):  # a chain
        value = value * 1.001 + 0.5
    value.save()
    graphs.append(g)
    return graphs


def test_every_corpus_graph_round_trips_to_the_same_values() -> None:
    net = mlp(width=8)
    x = torch.randn(3, 8)
    for graph in corpus(net):
        data = dumps(graph)
        assert data.startswith(MAGIC)
        loaded = loads(data, net)
        assert [n.name for n in loaded._all_nodes()] == [n.name for n in graph._all_nodes()]
        ours, theirs = run(graph, net, x), run(loaded, net, x)
        assert ours.keys() == theirs.keys() and ours
        for name in ours:
            assert_same(ours[name], theirs[name])


def test_a_trace_graph_round_trips_node_for_node() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        model[2].output[:, 0] = 0
        grad = model[2].output.grad.save()
        model.output.sum().backward()
    loaded = loads(dumps(tracer.graph), model._model)
    assert str(loaded).replace("serialization/__init__.py", "") != ""
    for ours, theirs in zip(tracer.graph._all_nodes(), loaded._all_nodes(), strict=True):
        assert ours.name == theirs.name and ours.args.__class__ is theirs.args.__class__
    assert grad.node.target == "grad"


@pytest.mark.local_only("its traces hold functions of the test, on purpose")
def test_code_is_refused_at_dumps_naming_the_node_and_line() -> None:
    model = NNsight(mlp())
    for make in (
        lambda tracer, h: tracer.apply(lambda t: t * 2, h),  # a lambda
        lambda tracer, h: tracer.apply(os.getcwd),  # any other function
        lambda tracer, h: h + object(),  # an object with no spelling
    ):
        with model.trace(torch.randn(2, 8)) as tracer:
            line = make.__code__.co_firstlineno
            make(tracer, model[0].output)  # not saved: a pure op is dead code, never run
            with pytest.raises(SerializationError, match=rf"node '.*' \(traced at .*:{line}\)"):
                dumps(tracer.graph)
            model.output.save()


def _message(records: list, tensors: list | None = None) -> bytes:
    return pack(records, tensors or [])


def _record(target: str, args: list, name: str = "n_0", kind: int = 0) -> list:
    return [kind, target, name, [0, *args], [2]]


@pytest.mark.parametrize(
    "target",
    ["posix.system", "os.system", "builtins.eval", "builtins.exec", "builtins.__import__",
     "builtins.open", "torch.load", "torch.save", "subprocess.run", "operator.attrgetter",
     "operator.methodcaller", "torch.hub.load", "module", "Tensor.__reduce_ex__", 42, None],
)  # fmt: skip
def test_hostile_targets_are_refused_and_nothing_runs(target: object, monkeypatch) -> None:
    ran: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    monkeypatch.setattr(builtins, "__import__", builtins.__import__)
    data = _message([[0, target, "evil_0", [0, "echo pwned"], [2]]])
    with pytest.raises(SerializationError):
        loads(data, mlp())
    assert not ran


def test_module_paths_outside_the_model_are_refused() -> None:
    for path in ("nope", "0.weight.nope", "..", "__class__"):
        with pytest.raises(SerializationError, match="no module"):
            loads(_message([_record(f"module:{path}", [])]), mlp())


def test_guards_keep_a_graph_off_the_weights_and_off_module_methods() -> None:
    net = mlp()
    before = net[0].weight.detach().clone()
    root = [9, 0]
    hostile = [
        # root.__class__ (a dunder read)
        [[0, "builtins.getattr", "a_0", [0, root, "__class__"], [2]]],
        # root[0].weight[:] = 0 (assigning into the weights)
        [
            [0, "operator.getitem", "a_0", [0, root, 0], [2]],
            [0, "builtins.getattr", "a_1", [0, [9, 1], "weight"], [2]],
            [0, "operator.setitem", "a_2", [0, [9, 2], [3, None, None, None], 0.0], [2]],
        ],
        # root.save_pretrained (a module's method)
        [[0, "builtins.getattr", "a_0", [0, root, "state_dict"], [2]]],
        # root[0].weight.add_(1) (an in-place method of the weights)
        [
            [0, "operator.getitem", "a_0", [0, root, 0], [2]],
            [0, "builtins.getattr", "a_1", [0, [9, 1], "weight"], [2]],
            [0, "torch.Tensor.add_", "a_2", [0, [9, 2], 1.0], [2]],
        ],
    ]
    for records in hostile:
        records = [*records, [3, "null", "null_0", [0, [9, len(records)]], [2]]]
        graph = loads(_message(records), net)
        with pytest.raises(PermissionError):
            graph.compile(net)
    assert torch.equal(net[0].weight, before)
    assert proxy_call  # imported for the allowlist: proxy_call is a name a graph may use


def test_broken_bytes_say_what_is_wrong() -> None:
    good = dumps(corpus(mlp())[0])
    cases = {
        b"": "shorter than its header",
        b"PICKLE\x00\x00\x00\x01rest": "magic",
        good[: len(good) // 2]: "corrupted",
        MAGIC + struct.pack(">H", FORMAT_VERSION + 1) + good[10:]: f"version {FORMAT_VERSION + 1}",
        # a msgpack str whose declared length is 4 GiB
        MAGIC + struct.pack(">H", FORMAT_VERSION) + b"\x92\xdb\xff\xff\xff\xff": "corrupted",
        # a bin of declared length 2**32 - 1 as the tensor table
        MAGIC + struct.pack(">H", FORMAT_VERSION) + b"\x92\x90\xc6\xff\xff\xff\xff": "corrupted",
    }
    for data, expected in cases.items():
        with pytest.raises(SerializationError, match=expected):
            loads(data, mlp())
    deep = [0]
    for _ in range(200):
        deep = [0, deep]
    with pytest.raises(SerializationError, match="deeper"):
        loads(_message([_record("operator.add", [deep, 1])]), mlp())
    with pytest.raises(SerializationError, match="not an earlier node"):
        loads(_message([_record("operator.add", [[9, 5], 1])]), mlp())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_never_do_more_than_raise(data: bytes) -> None:
    for candidate in (data, MAGIC + struct.pack(">H", FORMAT_VERSION) + data):
        try:
            loads(candidate, mlp())
        except SerializationError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_messages_never_do_more_than_raise(data: st.DataObject) -> None:
    good = bytearray(dumps(corpus(mlp())[0]))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(10, len(good) - 1))
        good[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(10, len(good)))
    try:
        graph = loads(bytes(good[:cut]), mlp())
    except SerializationError:
        return
    assert isinstance(graph, Graph)  # a valid graph: it was only built, nothing ran
