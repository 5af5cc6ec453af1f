"""``model.generate(...)``: interventions on every generation step of a Hugging Face model,
checked against plain ``generate`` calls observed (and edited) with forward hooks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from model_helpers import hook_count

from nnsight import NNsight
from nnsight.errors import TracingError

pytest.importorskip("transformers")
from test_transformers import gpt2, llama  # after the skip: it needs transformers

STEPS = 3
GREEDY = {"max_new_tokens": STEPS, "do_sample": False, "pad_token_id": 0}


@pytest.fixture(params=["gpt2", "llama"])
def net(request: pytest.FixtureRequest) -> torch.nn.Module:
    return gpt2() if request.param == "gpt2" else llama()


def prompts(rows: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(1, 100, (rows, length))
    return ids, torch.ones_like(ids)


def plain_generate(
    net: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, edit: Any = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``net.generate`` with a hook recording (and, with ``edit(step, logits)``, replacing)
    the LM head's output at every step."""
    seen: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        if edit is not None:
            out = edit(len(seen), out.clone())
        seen.append(out)
        return out

    handle = net.lm_head.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = net.generate(ids, attention_mask=mask, **GREEDY)
    finally:
        handle.remove()
    return out, seen


def test_each_step_is_a_next_call_and_the_output_is_generates(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids, mask = prompts(2)
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        steps = [model.lm_head.output.save()]
        for _ in range(STEPS - 1):
            steps.append(model.lm_head.next().output.save())
    expected_out, expected_steps = plain_generate(net, ids, mask)
    assert torch.equal(tracer.output, expected_out)
    assert len(expected_steps) == STEPS
    for ours, plain in zip(steps, expected_steps, strict=True):
        assert torch.allclose(ours.value, plain)
    assert hook_count(net) == 0


def test_an_edit_at_one_step_changes_what_is_generated(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids, mask = prompts(2)
    forced = 7
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        model.lm_head.next().output[:, -1, forced] = 1e4  # step 1 only

    def force(step: int, logits: torch.Tensor) -> torch.Tensor:
        if step == 1:
            logits[:, -1, forced] = 1e4
        return logits

    expected, _ = plain_generate(net, ids, mask, edit=force)
    unedited, _ = plain_generate(net, ids, mask)
    assert torch.equal(tracer.output, expected)
    assert (tracer.output[:, ids.shape[1] + 1] == forced).all()
    assert not torch.equal(expected, unedited)  # the edit mattered


def test_tracer_next_moves_every_module_to_the_next_step(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids, mask = prompts(1)
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        tracer.next()
        tracer.next()
        last = model.lm_head.output.save()
    _, expected_steps = plain_generate(net, ids, mask)
    assert torch.allclose(last.value, expected_steps[2])


def test_invoker_next_moves_its_invoke_to_the_next_step_as_in_nnsight_02() -> None:
    net = gpt2()
    model = NNsight(net)
    ids, mask = prompts(1)
    with model.generate(**GREEDY) as generator:
        with generator.invoke(ids, attention_mask=mask) as invoker:
            invoker.next()
            second = model.lm_head.output.save()
    _, expected_steps = plain_generate(net, ids, mask)
    assert torch.allclose(second.value, expected_steps[1])


def test_invokes_are_generated_as_one_batch_each_seeing_its_rows(net: torch.nn.Module) -> None:
    model = NNsight(net)
    ids, mask = prompts(3)
    with model.generate(**GREEDY) as tracer:
        with tracer.invoke(ids[:1], attention_mask=mask[:1]):
            first = model.lm_head.next().output.save()
        with tracer.invoke(ids[1:], attention_mask=mask[1:]):
            rest = model.lm_head.next().output.save()
    expected_out, expected_steps = plain_generate(net, ids, mask)
    assert torch.equal(tracer.output, expected_out)
    assert torch.allclose(first.value, expected_steps[1][:1])
    assert torch.allclose(rest.value, expected_steps[1][1:])


def test_a_step_past_the_last_one_raises_naming_the_module() -> None:
    net = gpt2()
    model = NNsight(net)
    ids, mask = prompts(1)
    with pytest.raises(TracingError, match="lm_head"):
        with model.generate(ids, attention_mask=mask, **GREEDY):
            model.lm_head.next(STEPS).output.save()  # steps are calls 0..STEPS-1
    assert hook_count(net) == 0
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:  # reusable at once
        pass
    assert tracer.output.shape == (1, ids.shape[1] + STEPS)


def test_a_model_without_generate_is_refused_at_the_call() -> None:
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="no generate"):
        model.generate(torch.zeros(1, 2))
