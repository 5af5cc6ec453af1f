"""tracer.cache(...): every module's output (and input) as plain forward hooks record them."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from model_helpers import Reuse, mlp

from nnsight import NNsight, TracingError

pytestmark = pytest.mark.local_only("tracer.cache does not travel to a remote worker")


def recorded(net: torch.nn.Module, run: Any) -> dict[str, list[Any]]:
    """``run()``'s module outputs, by ``model.<name>`` path, from forward hooks."""
    seen: dict[str, list[Any]] = {}
    handles = []
    for name, module in net.named_modules():
        key = "model" + (f".{name}" if name else "")
        handles.append(
            module.register_forward_hook(lambda m, a, o, k=key: seen.setdefault(k, []).append(o))
        )
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_every_module_by_path_and_by_navigation_equals_hooks() -> None:
    net = mlp()
    x = torch.randn(3, 8)
    model = NNsight(net)
    with model.trace(x) as tracer:
        cache = tracer.cache()
    expected = recorded(net, lambda: net(x))
    assert set(cache) == set(expected)
    for key, outputs in expected.items():
        assert torch.equal(cache[key].output, outputs[0])
    assert torch.equal(cache[2].output, expected["model.2"][0])  # navigation: model[2]
    assert torch.equal(cache.output, net(x))  # the root module's
    assert cache["model[2]"] is cache["2"] is cache["model.2"]


def test_gpt2_layers_navigation_inputs_and_what_edits_left() -> None:
    pytest.importorskip("transformers")
    from test_transformers import gpt2

    net = gpt2()
    ids = torch.randint(1, 100, (2, 5))
    model = NNsight(net)
    blocks = [model.transformer.h[0], "transformer.h.1"]
    with model.trace(ids) as tracer:
        model.transformer.h[0].mlp.output[:] = 0  # the cache sees values as edits left them
        cache = tracer.cache(modules=blocks, include_inputs=True)
    zeroed = net.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
    try:
        expected = recorded(net, lambda: net(ids))
    finally:
        zeroed.remove()
    assert list(cache) == ["model.transformer.h.0", "model.transformer.h.1"]
    for index in (0, 1):
        got, want = cache.transformer.h[index].output, expected[f"model.transformer.h.{index}"][0]
        got, want = (got[0], want[0]) if isinstance(want, tuple) else (got, want)
        assert torch.equal(got, want)
    hidden = cache["model.transformer.h.1"].input
    assert torch.equal(hidden, _first(expected["model.transformer.h.0"][0]))
    args, kwargs = cache["model.transformer.h.1"].inputs
    assert torch.equal(args[0], hidden) and isinstance(kwargs, dict)


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def test_every_call_of_a_module_called_several_times_and_dtype_device() -> None:
    net = Reuse()
    x = torch.randn(2, 6, requires_grad=True)
    model = NNsight(net)
    with model.trace(x) as tracer:
        cache = tracer.cache(modules=[model.shared], dtype=torch.float64, device="cpu")
    calls = recorded(net, lambda: net(x))["model.shared"]
    values = cache.shared.output
    assert len(values) == 2 and len(cache["model.shared"]) == 2
    for got, want in zip(values, calls, strict=True):
        assert got.dtype == torch.float64 and not got.requires_grad
        assert torch.equal(got, want.double())


def test_each_generation_step_is_cached() -> None:
    pytest.importorskip("transformers")
    from test_transformers import gpt2

    net = gpt2()
    ids = torch.randint(1, 100, (1, 4))
    options: dict[str, Any] = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    mask = torch.ones_like(ids)
    model = NNsight(net)
    with model.generate(ids, attention_mask=mask, **options) as tracer:
        cache = tracer.cache(modules=["lm_head"])
    expected = recorded(net, lambda: net.generate(ids, attention_mask=mask, **options))
    steps = cache.lm_head.output
    assert len(steps) == 3
    for got, want in zip(steps, expected["model.lm_head"], strict=True):
        assert torch.equal(got, want)


def test_an_unknown_module_is_refused_at_the_line_and_nothing_is_hooked() -> None:
    net = mlp()
    model = NNsight(net)
    with pytest.raises(TracingError, match=r"test_cache.py:\d+: the model has no module 'nope'"):
        with model.trace(torch.randn(1, 8)) as tracer:
            tracer.cache(modules=["nope"])
    assert all(not module._forward_hooks for module in net.modules())
    with pytest.raises(KeyError, match=r"'model\.9' is not cached"):
        with model.trace(torch.randn(1, 8)) as tracer:
            cache = tracer.cache(modules=["0"])
        cache["model.9"]
    assert all(not module._forward_hooks for module in net.modules())
