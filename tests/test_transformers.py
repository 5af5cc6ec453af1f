"""Hugging Face models built from configs with random weights (no downloads): GPT-2 and Llama.

``transformers`` 5 returns a bare tensor from GPT-2 blocks where 4.x returned a tuple; the
tests read block outputs through ``hidden`` so they pass with either.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import grad_at, hidden, hook_count, outputs_of

from nnsight import NNsight

transformers = pytest.importorskip("transformers")


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=3, n_embd=32, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, max_position_embeddings=32, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def blocks(net: torch.nn.Module) -> list[torch.nn.Module]:
    return list(net.transformer.h) if hasattr(net, "transformer") else list(net.model.layers)


def envoy_blocks(model: NNsight) -> object:
    return model.transformer.h if hasattr(model._model, "transformer") else model.model.layers


@pytest.fixture(params=["gpt2", "llama"])
def net(request: pytest.FixtureRequest) -> torch.nn.Module:
    return gpt2() if request.param == "gpt2" else llama()


def test_block_outputs_and_logits_match_hooks(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad(), model.trace(ids):
        saved = [block.output.save() for block in envoy_blocks(model)]
        logits = model.output.logits.save()
    with torch.no_grad():
        expected = outputs_of(net, [*blocks(net), net], ids)
    for ours, plain in zip(saved, expected[:-1], strict=True):
        assert torch.allclose(hidden(ours.value), hidden(plain[0]))
    assert torch.allclose(logits.value, expected[-1][0].logits)
    assert hook_count(net) == 0


def test_zeroing_an_mlp_matches_a_hook(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids = torch.randint(0, 100, (1, 6))
    with torch.no_grad(), model.trace(ids):
        envoy_blocks(model)[1].mlp.output[:, -1] = 0
        logits = model.output.logits.save()

    def zero_last(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, -1] = 0
        return out

    handle = blocks(net)[1].mlp.register_forward_hook(zero_last)
    try:
        with torch.no_grad():
            expected = net(ids).logits
    finally:
        handle.remove()
    assert torch.allclose(logits.value, expected, atol=1e-6)


def test_patching_a_block_between_invokes(net: torch.nn.Module) -> None:
    model = NNsight(net)
    clean, corrupt = torch.randint(0, 100, (1, 6)), torch.randint(0, 100, (1, 6))
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(clean):
            clean_out = envoy_blocks(model)[0].output
            clean_logits = model.output.logits.save()
        with tracer.invoke(corrupt):
            envoy_blocks(model)[0].output = clean_out  # the whole output, tuple or tensor
            patched_logits = model.output.logits.save()
    # Replacing the first block's whole output makes the rest of the run the clean one
    # (position and attention inputs do not depend on the token ids).
    assert torch.allclose(patched_logits.value, clean_logits.value, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(clean_logits.value, net(clean).logits, atol=1e-5)


def test_keyword_inputs_of_decoder_layers_are_visible() -> None:
    net = llama()
    model = NNsight(net)
    ids = torch.randint(0, 100, (1, 5))
    with torch.no_grad(), model.trace(ids):
        args, kwargs = model.model.layers[0].input
        states = args[0].save()
        positions = kwargs["position_ids"].save()
    with torch.no_grad():
        embedded = net.model.embed_tokens(ids)
    assert torch.allclose(states.value, embedded)
    assert torch.equal(positions.value.flatten(), torch.arange(5))


@pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning")  # renamed in 5.x
@pytest.mark.local_only("KV caches do not travel")
def test_kv_cache_outputs_and_a_cached_second_step(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids = torch.randint(0, 100, (1, 5))
    with torch.no_grad(), model.trace(ids, use_cache=True):
        first = model.output.save()
    cache = first.value.past_key_values
    step = torch.randint(0, 100, (1, 1))
    with torch.no_grad(), model.trace(step, past_key_values=cache, use_cache=True):
        last_block = envoy_blocks(model)[-1].output.save()
        logits = model.output.logits.save()
    with torch.no_grad():
        full = net(torch.cat([ids, step], dim=1), use_cache=False).logits
    assert torch.allclose(logits.value[:, -1], full[:, -1], atol=1e-5)
    assert hidden(last_block.value).shape[1] == 1


def test_gradient_of_a_block_output_matches_autograd(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids = torch.randint(0, 100, (1, 6))
    with model.trace(ids):
        out = envoy_blocks(model)[1].output
        states = out[0] if isinstance(out.node.proxy_value, tuple) else out
        grad = states.grad.save()
        model.output.logits[0, -1].max().backward()
    expected = grad_at(net, blocks(net)[1], ids, lambda out: out.logits[0, -1].max())
    assert torch.allclose(grad.value, expected, atol=1e-6)
    net.zero_grad()
