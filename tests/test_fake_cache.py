"""The cache of fake results: proxy values must match what real execution produces, nodes
never share proxy values, and only pure shape functions are cached."""

from __future__ import annotations

import operator

import torch
from torch._subclasses.fake_tensor import FakeTensor

from nnsight import Graph
from nnsight.tracing.fake_cache import LazyFake


def meta_of(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.device, t.requires_grad, t.storage_offset())


def test_cached_proxy_values_match_real_results() -> None:
    start = torch.randn(3, 4, requires_grad=True)
    graph = Graph(start)
    x = graph.module_proxy
    outputs = []
    for _ in range(3):  # the same ops again and again: later rounds are cache hits
        a = x * 2
        b = torch.relu(a + 1)
        c = b.sum(dim=0)
        d = torch.nn.functional.softmax(b.T, dim=-1)
        e = b[1:]  # non-zero storage offset: never cached, still right
        f = (a @ torch.ones(4, 5)).half()
        outputs += [a, b, c, d, e, f]
    for proxy in outputs:
        proxy.save()
    assert graph._fake.hits > 0
    graph.compile(start)
    for proxy in outputs:
        fake = proxy.node.proxy_value
        assert isinstance(fake, FakeTensor), proxy
        assert meta_of(fake) == meta_of(proxy.value), proxy.node.name


def test_cache_hits_stay_lazy_until_read_and_are_never_shared() -> None:
    graph = Graph(torch.ones(2, 3))
    first = graph.module_proxy + 1
    second = graph.module_proxy + 1
    assert type(second.node._proxy_value) is LazyFake
    assert "shape=(2, 3)" in str(second)  # reading it builds the fake tensor ...
    assert isinstance(second.node._proxy_value, FakeTensor)  # ... and keeps it
    assert first.node.proxy_value is not second.node.proxy_value


def test_in_place_ops_after_cached_ones_see_the_new_shape() -> None:
    graph = Graph(torch.ones(4, 4))
    x = graph.module_proxy
    x + 1
    y = x + 1  # cache hit: lazy
    y.unsqueeze_(0)  # in-place metadata change: must land on y's own fake tensor
    z = (y + 1).save()
    w = (x + 1).save()  # another hit: unaffected by y's in-place op
    assert z.node.proxy_value.shape == (1, 4, 4)
    assert w.node.proxy_value.shape == (4, 4)
    graph.compile(torch.ones(4, 4))
    assert z.value.shape == (1, 4, 4) and w.value.shape == (4, 4)


def test_user_functions_are_not_cached() -> None:
    calls = []

    def growing(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return t.new_zeros(len(calls))

    graph = Graph(torch.ones(2))
    first = graph.add(target=growing, args=[graph.module_proxy])
    second = graph.add(target=growing, args=[graph.module_proxy])
    assert first.node.proxy_value.shape == (1,) and second.node.proxy_value.shape == (2,)


def test_operator_targets_hit_and_shape_errors_still_raise() -> None:
    from nnsight import ValidationError

    graph = Graph(torch.ones(2, 3))
    graph.add(target=operator.add, args=[graph.module_proxy, 1])
    hits = graph._fake.hits
    graph.add(target=operator.add, args=[graph.module_proxy, 1])
    assert graph._fake.hits == hits + 1
    for _ in range(2):  # failures are never cached
        try:
            graph.module_proxy @ torch.ones(5, 5)
        except ValidationError:
            pass
        else:
            raise AssertionError("shape error not raised")


def test_chains_of_cached_ops_keep_hitting_the_cache() -> None:
    """The second op hits on a real fake input, the third on the second's lazy result: a lazy
    fake must have the same argument key as the real fake tensor it stands for."""
    graph = Graph(torch.ones(2, 3))
    first = graph.module_proxy + 1
    second = first + 1
    third = second + 1
    assert graph._fake.hits == 2
    assert type(third.node._proxy_value) is LazyFake
    assert third.node.proxy_value.shape == (2, 3)
