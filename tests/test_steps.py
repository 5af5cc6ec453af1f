"""tracer.iter[...] and tracer.all(): a loop body bound to generation steps, checked against
plain generate observed (and edited) by a forward hook on the LM head."""

from __future__ import annotations

import pytest
import torch

from nnsight import NNsight, TracingError

pytest.importorskip("transformers")
from test_generate import GREEDY, STEPS, plain_generate, prompts
from test_transformers import gpt2


def test_iter_saves_each_steps_value() -> None:
    net = gpt2()
    ids, mask = prompts(2)
    model = NNsight(net)
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        logits = []
        steps = []
        for step in tracer.iter[0:STEPS]:
            steps.append(step)
            logits.append(model.lm_head.output.save())
        first_again = model.lm_head.output.save()  # after the loop: the call before it
    expected_ids, seen = plain_generate(net, ids, mask)
    assert steps == list(range(STEPS)) and len(logits) == STEPS
    for got, want in zip(logits, seen, strict=True):
        assert torch.equal(got.value, want)
    assert torch.equal(first_again.value, seen[0])
    assert torch.equal(tracer.result, expected_ids)


def test_all_edits_every_step_as_a_hook_would() -> None:
    net = gpt2()
    ids, mask = prompts(1)
    model = NNsight(net)
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        for _ in tracer.all():
            model.lm_head.output[:, -1, 7] = 1e4  # token 7, every step

    def force(step: int, logits: torch.Tensor) -> torch.Tensor:
        logits[:, -1, 7] = 1e4
        return logits

    expected, _ = plain_generate(net, ids, mask, edit=force)
    assert torch.equal(tracer.output, expected)
    assert (tracer.output[0, -STEPS:] == 7).all()


def test_a_slice_from_a_later_step_and_a_list_of_steps() -> None:
    net = gpt2()
    ids, mask = prompts(1)
    model = NNsight(net)
    with model.generate(ids, attention_mask=mask, **GREEDY) as tracer:
        later = [model.lm_head.output.save() for _ in tracer.iter[1:]]
        chosen = [model.lm_head.output.save() for _ in tracer.iter[[0, 2]]]
    _, seen = plain_generate(net, ids, mask)
    assert [torch.equal(p.value, s) for p, s in zip(later, seen[1:], strict=True)] == [True] * 2
    assert torch.equal(chosen[0].value, seen[0]) and torch.equal(chosen[1].value, seen[2])


def test_iter_outside_generation_and_an_unknown_count_are_clear_errors() -> None:
    net = gpt2()
    model = NNsight(net)
    ids, mask = prompts(1)
    with pytest.raises(TracingError, match=r"tracer.iter at .*test_steps.py:\d+ loops over gen"):
        with model.trace(ids) as tracer:
            for _ in tracer.iter[0:2]:
                pass
    with pytest.raises(TracingError, match=r"tracer.all\(\) at .*test_steps.py:\d+ loops over"):
        with model.trace(ids) as tracer:
            tracer.all()
    with pytest.raises(TracingError, match="number of steps is not known"):
        with model.generate(ids, attention_mask=mask, do_sample=False) as tracer:
            net.generation_config.max_new_tokens = None
            tracer.all()
    assert all(not module._forward_hooks for module in net.modules())
