"""LanguageModel: Hugging Face causal LMs saved to a directory and loaded back, as nnsight 0.2's.

Every value is checked against the same weights loaded independently with ``transformers``
(plain forwards with hooks, plain greedy ``generate``), on GPT-2 and Llama.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from model_helpers import hidden, hook_count, outputs_of

from nnsight import LanguageModel, TracingError
from nnsight.models.LanguageModel import LanguageModelProxy
from nnsight.models.tiny import save_language_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

PROMPTS = ["the Eiffel Tower is in the city of", "Paris is in"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_language_model(str(tmp_path_factory.mktemp(request.param)), request.param)


@pytest.fixture(scope="module")
def plain(model_dir: str) -> Any:
    """The same weights, loaded by ``transformers`` alone: the oracle."""
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(model_dir: str) -> Any:
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tok.pad_token = tok.eos_token
    return tok


def blocks(net: Any) -> list[torch.nn.Module]:
    return list(net.transformer.h) if hasattr(net, "transformer") else list(net.model.layers)


def envoy_blocks(model: LanguageModel) -> Any:
    return model.transformer.h if hasattr(model._model, "transformer") else model.model.layers


def forward_outputs(net: Any, modules: list[torch.nn.Module], **inputs: Any) -> list[Any]:
    with torch.no_grad():
        return [seen[0] for seen in outputs_of(_Kwargs(net, inputs), modules)]


class _Kwargs(torch.nn.Module):
    """Calls ``net(**inputs)`` for ``outputs_of``, which passes positional inputs."""

    def __init__(self, net: Any, inputs: dict[str, Any]) -> None:
        super().__init__()
        self.net, self.inputs = net, inputs

    def forward(self) -> Any:
        return self.net(**self.inputs)


# ----- loading ------------------------------------------------------------------------------


def test_weights_are_meta_until_the_first_run_then_every_value_matches(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    assert not model.dispatched
    assert {p.device.type for p in model._model.parameters()} == {"meta"}
    first_block = envoy_blocks(model)[0]  # an envoy obtained before the weights load
    with torch.no_grad(), model.trace(PROMPTS):
        states = first_block.output.save()
        logits = model.lm_head.output.save()
    assert model.dispatched
    assert {p.device.type for p in model._model.parameters()} == {"cpu"}
    ours, theirs = model._model.state_dict(), plain.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    expected = forward_outputs(plain, [blocks(plain)[0], plain.lm_head], **inputs)
    assert torch.allclose(hidden(states.value), hidden(expected[0]), atol=1e-6)
    assert torch.allclose(logits.value, expected[1], atol=1e-6)
    with torch.no_grad(), model.trace(PROMPTS):  # the same envoy, after the load
        again = first_block.output.save()
    assert torch.allclose(hidden(again.value), hidden(states.value))
    assert hook_count(model._model) == 0


def test_dispatch_at_once_or_on_request(model_dir: str) -> None:
    assert LanguageModel(model_dir, dispatch=True).dispatched
    model = LanguageModel(model_dir)
    model.dispatch_model()
    assert model.dispatched and next(model._model.parameters()).device.type == "cpu"


def test_load_kwargs_reach_from_pretrained(model_dir: str, tokenizer: Any) -> None:
    model = LanguageModel(model_dir, dtype=torch.float64)
    assert next(model._model.parameters()).dtype == torch.float64  # already on meta
    with torch.no_grad(), model.trace("the cat sat"):
        dtype = model.lm_head.output.dtype
        logits = model.lm_head.output.save()
    assert dtype == torch.float64 and logits.value.dtype == torch.float64


def test_a_loaded_model_is_used_as_it_is_with_its_saved_tokenizer(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(plain)
    assert model._model is plain and model.dispatched
    assert model.tokenizer is not None and model.tokenizer.padding_side == "left"
    with torch.no_grad(), model.trace("the cat sat on the mat"):
        logits = model.output.logits.save()
    with torch.no_grad():
        expected = plain(**tokenizer("the cat sat on the mat", return_tensors="pt")).logits
    assert torch.allclose(logits.value, expected)


def test_without_a_tokenizer_text_is_refused_and_ids_work(plain: Any) -> None:
    net = type(plain)(plain.config).eval()  # built from a config: no tokenizer anywhere
    net.load_state_dict(plain.state_dict())
    net.config._name_or_path = ""
    model = LanguageModel(net)
    assert model.tokenizer is None
    with pytest.raises(TypeError, match="tokenizer="):
        with model.trace("the cat"):
            model.output.save()
    assert hook_count(net) == 0
    with torch.no_grad(), model.trace([4, 5, 6]):
        logits = model.output.logits.save()
    with torch.no_grad():
        assert torch.allclose(logits.value, net(torch.tensor([[4, 5, 6]])).logits)


def test_tokenizer_pads_left_with_eos_when_it_has_no_pad_token(model_dir: str) -> None:
    model = LanguageModel(model_dir)
    assert model.tokenizer.padding_side == "left"
    assert model.tokenizer.pad_token == model.tokenizer.eos_token == "<eos>"
    given = transformers.AutoTokenizer.from_pretrained(model_dir)  # right padding, no pad
    given.padding_side = "right"
    with pytest.warns(UserWarning, match="left"):
        model = LanguageModel(model_dir, tokenizer=given)
    assert model.tokenizer is given and given.padding_side == "left"


def test_tokenizer_and_config_and_the_module_tree(model_dir: str, plain: Any) -> None:
    model = LanguageModel(model_dir)
    assert model.config.model_type == plain.config.model_type
    assert model.config.vocab_size == plain.config.vocab_size == len(model.tokenizer)
    tree = repr(model)
    assert tree.startswith(type(plain).__name__ + "(") and "(generator): WrapperModule()" in tree
    assert repr(plain)[:-1] in tree


def test_an_unknown_directory_or_hub_id_names_the_key() -> None:
    for key in ("/no/such/model/dir", "no-such-user/no-such-model"):
        with pytest.raises(OSError, match=key):
            LanguageModel(key)


# ----- inputs -------------------------------------------------------------------------------


def test_every_input_form_gives_the_same_ids(model_dir: str, tokenizer: Any) -> None:
    model = LanguageModel(model_dir)
    text = "the cat sat on the mat"
    ids = tokenizer(text)["input_ids"]
    forms: list[Any] = [
        text,
        [text],
        ids,
        [ids],
        torch.tensor(ids),
        torch.tensor([ids]),
        {"input_ids": ids},
        {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))},
        tokenizer(text, return_tensors="pt"),
    ]
    expected = None
    for form in forms:
        with torch.no_grad(), model.trace(form):
            logits = model.lm_head.output.save()
        expected = logits.value if expected is None else expected
        assert torch.equal(logits.value, expected), form


def test_lists_of_prompts_are_left_padded_with_a_mask(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    with torch.no_grad(), model.trace(PROMPTS):
        _, kwargs = model.input
        ids = kwargs["input_ids"].save()
        mask = kwargs["attention_mask"].save()
    expected = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert torch.equal(ids.value, expected["input_ids"])
    assert torch.equal(mask.value, expected["attention_mask"])
    assert mask.value[1, 0] == 0 and ids.value[1, 0] == tokenizer.eos_token_id  # padded left
    token_lists = [tokenizer(p)["input_ids"] for p in PROMPTS]
    with torch.no_grad(), model.trace(token_lists):
        _, kwargs = model.input
        same = kwargs["input_ids"].save()
    assert torch.equal(same.value, expected["input_ids"])


def test_invokes_of_different_lengths_are_one_padded_batch_each_seeing_its_rows(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            long_logits = model.lm_head.output.save()
        with tracer.invoke(PROMPTS[1]):
            short_logits = model.lm_head.output.save()
            last_block = envoy_blocks(model)[-1].output.save()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    logits, block = forward_outputs(plain, [plain.lm_head, blocks(plain)[-1]], **batch)
    assert torch.allclose(long_logits.value, logits[:1], atol=1e-6)
    assert torch.allclose(short_logits.value, logits[1:], atol=1e-6)
    assert torch.allclose(hidden(last_block.value), hidden(block)[1:], atol=1e-6)


def test_labels_are_batched_with_their_inputs(model_dir: str, plain: Any, tokenizer: Any) -> None:
    model = LanguageModel(model_dir)
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(PROMPTS[0], labels=PROMPTS[0]):
            pass
        with tracer.invoke(PROMPTS[1], labels=PROMPTS[1]):
            loss = model.output.loss.save()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        expected = plain(**batch, labels=labels).loss
    assert torch.allclose(loss.value, expected)


def test_other_keyword_arguments_of_invokes_are_batched(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    prompts = ["the cat sat on the mat", "the dog ran to the park"]  # as many tokens
    positions = [torch.tensor([[0, 0, 1, 1, 2, 2]]), torch.arange(6)[None]]  # RoPE: not a shift
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(prompts[0], position_ids=positions[0]):
            shifted = model.output.logits.save()
        with tracer.invoke(prompts[1], position_ids=positions[1]):
            logits = model.output.logits.save()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = plain(**batch, position_ids=torch.cat(positions)).logits
        unshifted = plain(**batch).logits
    assert torch.allclose(shifted.value, expected[:1], atol=1e-6)
    assert torch.allclose(logits.value, expected[1:], atol=1e-6)
    assert not torch.allclose(shifted.value, unshifted[:1], atol=1e-3)  # the ids mattered


def test_bad_inputs_raise_a_type_error_listing_what_is_accepted(model_dir: str) -> None:
    model = LanguageModel(model_dir)
    for bad in (3.5, [1.5, 2.5], torch.zeros(2, 3, 4, dtype=torch.long), [], object()):
        with pytest.raises(TypeError, match="a list of strings"):
            with model.trace(bad):
                model.output.save()
    with pytest.raises(TypeError, match="one input"):
        with model.trace("the cat", "the dog"):
            pass
    assert hook_count(model._model) == 0
    with model.trace("the cat"):  # still usable
        out = model.output.logits.save()
    assert out.shape[:2] == (1, 2)


# ----- generation ---------------------------------------------------------------------------


def test_generate_equals_plain_greedy_generate(model_dir: str, plain: Any, tokenizer: Any) -> None:
    model = LanguageModel(model_dir)
    with model.generate(PROMPTS, max_new_tokens=4, do_sample=False) as tracer:
        ids = model.generator.output.save()
        first_step = model.lm_head.output.save()
        second_step = model.lm_head.next().output.save()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    seen: list[torch.Tensor] = []
    handle = plain.lm_head.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            expected = plain.generate(
                **batch, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
    finally:
        handle.remove()
    assert torch.equal(ids.value, expected) and torch.equal(tracer.output, expected)
    assert torch.allclose(first_step.value, seen[0]) and torch.allclose(second_step.value, seen[1])
    assert hook_count(model._model) == 0


def test_generate_makes_one_new_token_by_default_as_in_nnsight_02(model_dir: str) -> None:
    model = LanguageModel(model_dir)
    with model.generate("the cat sat") as tracer:
        pass
    assert tracer.output.shape == (1, 4)


def test_generator_output_outside_generate_is_refused(model_dir: str) -> None:
    model = LanguageModel(model_dir)
    with pytest.raises(TracingError, match="generate"):
        with model.trace("the cat"):
            model.generator.output.save()
    assert hook_count(model._model) == 0
    with pytest.raises(TracingError, match="outside a trace"):
        model.generator.output


# ----- token indexing -----------------------------------------------------------------------


def test_token_indexing_counts_from_each_invokes_first_token(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    short = len(tokenizer(PROMPTS[1])["input_ids"])
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            long_first = model.lm_head.output.token[0].save()
        with tracer.invoke(PROMPTS[1]):
            output = model.lm_head.output
            assert isinstance(output, LanguageModelProxy)
            short_first = output.token[0].save()
            short_last = output.t[-1].save()
            short_head = output.t[0:2].save()
            with pytest.raises(IndexError, match="out of range"):
                output.token[short]
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    (logits,) = forward_outputs(plain, [plain.lm_head], **batch)
    padded = batch["input_ids"].shape[1]
    assert torch.allclose(long_first.value, logits[:1, 0])
    assert torch.allclose(short_first.value, logits[1:, padded - short])  # not a pad position
    assert torch.allclose(short_last.value, logits[1:, -1])
    assert torch.allclose(short_head.value, logits[1:, padded - short : padded - short + 2])


def test_token_indexing_can_set(model_dir: str, plain: Any, tokenizer: Any) -> None:
    model = LanguageModel(model_dir)
    with torch.no_grad(), model.trace("the cat sat"):
        model.lm_head.output.t[1] = 0
        logits = model.lm_head.output.save()
    assert torch.all(logits.value[0, 1] == 0) and not torch.all(logits.value[0, 0] == 0)


# ----- memory -------------------------------------------------------------------------------


def test_nothing_is_kept_after_traces_and_the_meta_model_is_dropped_on_load(
    model_dir: str,
) -> None:
    import gc
    import weakref

    model = LanguageModel(model_dir)
    meta_ref = weakref.ref(model._model)
    graph_refs, value_refs = [], []
    gc.collect()
    gc.disable()
    try:
        for prompt in PROMPTS * 3:
            with torch.no_grad(), model.trace(prompt) as tracer:
                hidden = envoy_blocks(model)[0].mlp.output
                (hidden * 2).shape  # a shape on demand keeps nothing alive either
                kept = model.lm_head.output.save()
            graph_refs.append(weakref.ref(tracer.graph))
            value_refs.append(weakref.ref(kept.value))
            del tracer, hidden, kept
        assert meta_ref() is None  # the load replaced it, and nothing else held it
        assert all(ref() is None for ref in graph_refs + value_refs)
    finally:
        gc.enable()
    assert hook_count(model._model) == 0


# ----- decoder layers as transformers 4.x's tuples (nnsight 0.2 code indexes them) ---------


def layer_hook_run(plain: Any, tokenizer: Any, prompt: str, index: int, change: Any) -> Any:
    """Plain logits with ``change(hidden_states)`` applied to decoder layer ``index``'s
    hidden states by a hook that returns the layer's output in its own form."""

    def hook(module: torch.nn.Module, args: Any, out: Any) -> Any:
        if isinstance(out, tuple):
            return (change(out[0]), *out[1:])
        return change(out)

    handle = blocks(plain)[index].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return plain(**tokenizer(prompt, return_tensors="pt")).logits
    finally:
        handle.remove()


def test_layer_outputs_are_tuples_whose_first_item_is_the_hidden_states(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    prompt = "The Eiffel Tower is in the city of"
    with torch.no_grad(), model.trace(prompt):
        output = envoy_blocks(model)[1].output
        assert isinstance(output.shape, tuple) and len(output) >= 1
        states = envoy_blocks(model)[1].output[0].save()
        first_token = envoy_blocks(model)[1].output[0].t[0].save()
    (expected,) = forward_outputs(
        plain, [blocks(plain)[1]], **tokenizer(prompt, return_tensors="pt")
    )
    assert states.shape == hidden(expected).shape and states.dim() == 3
    assert torch.allclose(states.value, hidden(expected))
    assert torch.allclose(first_token.value, hidden(expected)[:, 0])


def test_editing_a_layer_through_its_tuple_reaches_the_model(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    prompt = "The cat sat on the mat"
    with torch.no_grad(), model.trace(prompt):
        envoy_blocks(model)[0].output[0][:, -1] = 0  # in place, 0.2's spelling
        zeroed = model.lm_head.output.save()
    with torch.no_grad(), model.trace(prompt):
        new, *rest = envoy_blocks(model)[1].output  # 0.2's README unpacking
        envoy_blocks(model)[1].output = (new * 2, *rest)
        doubled = model.lm_head.output.save()
    with torch.no_grad(), model.trace(prompt):
        envoy_blocks(model)[1].output = envoy_blocks(model)[1].output[0] * 2  # a tensor too
        doubled_too = model.lm_head.output.save()

    def zero_last(states: torch.Tensor) -> torch.Tensor:
        states = states.clone()
        states[:, -1] = 0
        return states

    assert torch.allclose(zeroed.value, layer_hook_run(plain, tokenizer, prompt, 0, zero_last))
    expected = layer_hook_run(plain, tokenizer, prompt, 1, lambda states: states * 2)
    assert torch.allclose(doubled.value, expected, atol=1e-5)
    assert torch.allclose(doubled_too.value, expected, atol=1e-5)


def test_layer_tuples_off_shows_what_transformers_returns(model_dir: str, plain: Any) -> None:
    model = LanguageModel(model_dir, layer_tuples=False)
    with torch.no_grad(), model.trace("The cat sat"):
        output = envoy_blocks(model)[0].output.save()
    with torch.no_grad():
        (native,) = forward_outputs(
            plain, [blocks(plain)[0]], **model.tokenizer("The cat sat", return_tensors="pt")
        )
    assert type(output.value) is type(native)


def test_generation_steps_of_a_layer_index_its_tuple(
    model_dir: str, plain: Any, tokenizer: Any
) -> None:
    model = LanguageModel(model_dir)
    with model.generate("The Eiffel Tower is in the city of", max_new_tokens=3):
        first = envoy_blocks(model)[-1].output[0].save()
        second = envoy_blocks(model)[-1].next().output[0].save()
    seen: list[Any] = []
    handle = blocks(plain)[-1].register_forward_hook(lambda m, a, out: seen.append(hidden(out)))
    try:
        with torch.no_grad():
            plain.generate(
                **tokenizer("The Eiffel Tower is in the city of", return_tensors="pt"),
                max_new_tokens=3,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
    finally:
        handle.remove()
    assert torch.allclose(first.value, seen[0]) and torch.allclose(second.value, seen[1])
    assert second.shape[1] == 1  # a cached step: one new token
