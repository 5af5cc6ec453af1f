"""nnsight 0.2's own tutorials (docs/source/notebooks at v0.2.21), run unchanged but for the
model (built locally instead of downloaded) and print calls, each result checked against
plain PyTorch, under transformers 5 (GPT-2 blocks return a tensor) and 4 (a tuple): 0.2 code
indexes block outputs as tuples (``output[0]``), which ``LanguageModel`` keeps working."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from nnsight import NNsight

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from nnsight.models.tiny import save_language_model

    return save_language_model(str(tmp_path_factory.mktemp("gpt2")), "gpt2")


def walkthrough_net() -> torch.nn.Module:
    torch.manual_seed(0)
    input_size, hidden_dims, output_size = 5, 10, 2
    return torch.nn.Sequential(
        OrderedDict(
            [
                ("layer1", torch.nn.Linear(input_size, hidden_dims)),
                ("layer2", torch.nn.Linear(hidden_dims, output_size)),
            ]
        )
    ).requires_grad_(False)


def test_walkthrough_on_a_small_network() -> None:
    net = walkthrough_net()
    model = NNsight(net)
    input = torch.rand((1, 5))
    hidden_dims = 10
    assert repr(model) == repr(net)

    with model.trace(input):
        l1_output = model.layer1.output.save()
    with model.trace(input):
        l2_input = model.layer2.input.save()
    with model.trace(input):
        l1_output_ = model.layer1.output
        l1_amax = torch.argmax(l1_output_, dim=1).save()
    with model.trace(input):
        value = (model.layer1.output.sum() + model.layer2.output.sum()).save()
    expected = net.layer1(input)
    assert torch.equal(l1_output.value, expected)
    assert torch.equal(l2_input.value[0][0], expected)
    assert l1_amax[0] == expected.argmax(dim=1)[0]
    assert torch.allclose(value.value, expected.sum() + net(input).sum())

    with model.trace(input):
        l1_output_before = model.layer1.output.clone().save()
        assert model.layer1.output.shape == (1, hidden_dims)
        model.layer1.output[:, hidden_dims - 1] = 0
        l1_output_after = model.layer1.output.save()
    assert torch.equal(l1_output_before.value, expected)
    assert l1_output_after[0, -1] == 0 and torch.equal(l1_output_after[0, :-1], expected[0, :-1])

    with pytest.raises(IndexError):  # the tutorial's deliberate out-of-range edit
        with model.trace(input):
            model.layer1.output[:, hidden_dims] = 0

    torch.manual_seed(1)
    with model.trace(input):
        l1_output_before = model.layer1.output.clone().save()
        noise = (0.001**0.5) * torch.randn(l1_output_before.shape)
        model.layer1.output = l1_output_before + noise
        l1_output_after = model.layer1.output.save()
    torch.manual_seed(1)
    assert torch.allclose(l1_output_after.value, expected + (0.001**0.5) * torch.randn(1, 10))

    with model.trace(input):
        model.layer1.output.requires_grad = True
        model.layer1.output.grad[:] = 0
        model.layer2.output.grad = model.layer2.output.grad.clone() * 2
        layer1_output_grad = model.layer1.output.grad.save()
        layer2_output_grad = model.layer2.output.grad.save()
        loss = model.output.sum()
        loss.backward()
    assert torch.equal(layer2_output_grad.value, torch.full((1, 2), 2.0))
    assert torch.equal(layer1_output_grad.value, torch.zeros(1, 10))


def test_walkthrough_and_features_on_a_language_model(lm_dir: str) -> None:
    from nnsight import LanguageModel

    model = LanguageModel(lm_dir)
    plain = transformers.AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    prompt = "The Eiffel Tower is in the city of"

    with model.trace(prompt):
        model.transformer.h[-1].mlp.output[0][:] = 0
        token_ids = model.lm_head.output.argmax(dim=-1).save()
    handle = plain.transformer.h[-1].mlp.register_forward_hook(lambda m, a, o: o * 0)
    try:
        with torch.no_grad():
            expected = plain(**model.tokenizer(prompt, return_tensors="pt")).logits.argmax(-1)
    finally:
        handle.remove()
    assert torch.equal(token_ids.value, expected)
    assert isinstance(model.tokenizer.decode(token_ids[0][-1]), str)

    with model.trace() as tracer:
        with tracer.invoke(prompt):
            embeddings = model.transformer.wte.output
        with tracer.invoke("_ _ _ _ _ _ _ _"):  # as many tokens: no padding
            model.transformer.wte.output = embeddings
            token_ids_intervention = model.lm_head.output.argmax(dim=-1).save()
        with tracer.invoke("_ _ _ _ _ _ _ _"):
            token_ids_original = model.lm_head.output.argmax(dim=-1).save()
    with torch.no_grad():
        clean = plain(**model.tokenizer(prompt, return_tensors="pt")).logits.argmax(-1)
        underscores = plain(**model.tokenizer("_ _ _ _ _ _ _ _", return_tensors="pt"))
    assert torch.equal(token_ids_intervention.value, clean)
    assert torch.equal(token_ids_original.value, underscores.logits.argmax(-1))

    with model.generate(prompt, max_new_tokens=3):
        token_ids_1 = model.lm_head.output.argmax(dim=-1).save()
        token_ids_2 = model.lm_head.next().output.argmax(dim=-1).save()
        token_ids_3 = model.lm_head.next().output.argmax(dim=-1).save()
        output = model.generator.output.save()
    steps = [token_ids_1, token_ids_2, token_ids_3]
    assert [int(step[0][-1]) for step in steps] == output[0, -3:].tolist()
    assert len(model.tokenizer.batch_decode(output)) == 1

    with model.trace("The"):
        first = model.transformer.input[0][0].t[0].save()
    assert first.shape == (1,) and int(first[0]) == model.tokenizer("The")["input_ids"][0]


def test_logit_lens_reads_invoker_inputs(lm_dir: str) -> None:
    from nnsight import LanguageModel

    model = LanguageModel(lm_dir, dispatch=True)
    prompt = "The Eiffel Tower is in the city of"
    layers = model.transformer.h
    probs_layers = []
    with model.trace() as tracer:
        with tracer.invoke(prompt) as invoker:
            for layer in layers:
                layer_output = model.lm_head(model.transformer.ln_f(layer.mlp.output))
                probs = torch.nn.functional.softmax(layer_output, dim=-1).save()
                probs_layers.append(probs)
    probs = torch.cat([probs.value for probs in probs_layers])
    input_words = [model.tokenizer.decode(t) for t in invoker.inputs[0]["input_ids"][0]]
    assert input_words[:3] == ["The", "Eiffel", "Tower"]
    net = model._model
    seen = []
    handles = [
        layer.mlp.register_forward_hook(lambda m, a, o: seen.append(o))
        for layer in net.transformer.h
    ]
    try:
        with torch.no_grad():
            net(**model.tokenizer(prompt, return_tensors="pt"))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        expected = torch.cat([net.lm_head(net.transformer.ln_f(o)).softmax(-1) for o in seen])
    assert torch.allclose(probs, expected, atol=1e-6)


def block_outputs(net: torch.nn.Module, prompt: str, tokenizer: object) -> list[torch.Tensor]:
    """Every GPT-2 block's hidden states in a plain forward (hooks)."""
    seen: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: object, out: object) -> None:
        seen.append(out[0] if isinstance(out, tuple) else out)  # type: ignore[index]

    handles = [block.register_forward_hook(keep) for block in net.transformer.h]
    try:
        with torch.no_grad():
            net(**tokenizer(prompt, return_tensors="pt"))  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_feature_notebooks_that_index_block_outputs(lm_dir: str) -> None:
    from nnsight import LanguageModel

    model = LanguageModel(lm_dir)
    plain = transformers.AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    prompt = "The Eiffel Tower is in the city of"
    expected = block_outputs(plain, prompt, model.tokenizer)[-1]

    # getting
    with model.trace(prompt) as tracer:
        hidden_states = model.transformer.h[-1].output[0].save()
    assert torch.allclose(hidden_states.value, expected)

    # setting
    torch.manual_seed(0)
    with model.trace(prompt) as tracer:
        hidden_states_pre = model.transformer.h[-1].output[0].clone().save()
        noise = (0.001**0.5) * torch.randn(hidden_states_pre.shape)
        model.transformer.h[-1].output[0][:] = hidden_states_pre + noise
        hidden_states_post = model.transformer.h[-1].output[0].save()
    torch.manual_seed(0)
    assert torch.allclose(hidden_states_pre.value, expected)
    noise = (0.001**0.5) * torch.randn(expected.shape)
    assert torch.allclose(hidden_states_post.value, expected + noise)

    # operations
    with model.trace(prompt) as tracer:
        hidden_states_pre = model.transformer.h[-1].output[0].save()
        hs_sum = torch.sum(hidden_states_pre).save()
        hs_edited = hidden_states_pre + hs_sum
        hs_edited = hs_edited.save()
    assert torch.allclose(hs_sum.value, expected.sum(), rtol=1e-4)
    assert torch.allclose(hs_edited.value, expected + expected.sum(), rtol=1e-4)

    # modules
    with model.trace(prompt) as tracer:
        hidden_states = model.transformer.h[-1].output[0]
        hidden_states = model.lm_head(model.transformer.ln_f(hidden_states)).save()
        tokens = torch.softmax(hidden_states, dim=2).argmax(dim=2).save()
    with torch.no_grad():
        lens = plain.lm_head(plain.transformer.ln_f(expected))
    assert torch.allclose(hidden_states.value, lens, atol=1e-5)
    assert torch.equal(tokens.value, lens.softmax(dim=2).argmax(dim=2))
    assert isinstance(model.tokenizer.decode(tokens[0]), str)

    # multiple_token
    with model.generate(prompt, max_new_tokens=3) as tracer:
        hidden_states1 = model.transformer.h[-1].output[0].save()
        hidden_states2 = model.transformer.h[-1].next().output[0].save()
        hidden_states3 = model.transformer.h[-1].next().output[0].save()
        out = model.generator.output.save()
    assert hidden_states1.shape == expected.shape
    assert hidden_states2.shape == hidden_states3.shape == (1, 1, expected.shape[-1])
    assert out.shape == (1, expected.shape[1] + 3)

    # token_indexing
    with model.trace(prompt) as tracer:
        hidden_states = model.transformer.h[-1].output[0].t[0].save()
        output = model.output.save()
    assert torch.allclose(hidden_states.value, expected[:, 0])
    assert output.logits.shape[:2] == expected.shape[:2]
    with model.trace() as tracer:
        with tracer.invoke("The") as invoker:
            correct_a = model.transformer.input[0][0].t[0].save()
        with tracer.invoke("The Eiffel Tower is in the city of") as invoker:  # noqa: F841
            correct_b = model.transformer.input[0][0].t[0].save()
    assert (
        correct_a.value.tolist()
        == correct_b.value.tolist()
        == [model.tokenizer("The")["input_ids"][0]]
    )


def test_gradient_notebook(lm_dir: str) -> None:
    from nnsight import LanguageModel

    model = LanguageModel(lm_dir)
    plain = transformers.AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    with model.trace("Hello World") as tracer:
        hidden_states = model.transformer.h[-1].output[0].save()
        hidden_states_grad = model.transformer.h[-1].output[0].grad.save()
        model.output.logits.sum().backward()
    seen: list[torch.Tensor] = []
    keep = plain.transformer.h[-1].register_forward_hook(
        lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        logits = plain(**model.tokenizer("Hello World", return_tensors="pt")).logits
    finally:
        keep.remove()
    (expected,) = torch.autograd.grad(logits.sum(), seen[0])
    assert torch.allclose(hidden_states.value, seen[0].detach())
    assert torch.allclose(hidden_states_grad.value, expected, atol=1e-6)

    with model.trace("Hello World") as tracer:  # noqa: F841 (the notebook's code)
        hidden_states = model.transformer.h[-1].output[0].save()
        hidden_states_grad_before = hidden_states.grad.clone().save()
        hidden_states.grad = torch.zeros(hidden_states.grad.shape)
        hidden_states_grad_after = hidden_states.grad.save()
        logits = model.output.logits
        logits.sum().backward()
    assert torch.allclose(hidden_states_grad_before.value, expected, atol=1e-6)
    assert torch.equal(hidden_states_grad_after.value, torch.zeros_like(expected))
    model._model.zero_grad()
