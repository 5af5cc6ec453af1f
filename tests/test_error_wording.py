"""What a new user sees when something is wrong: each message names what they wrote and the
line, and says the real cause (issue 18: each test reproduces what a user ran into)."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from model_helpers import hook_count, mlp

from nnsight import NNsight, TracingError, ValidationError, ValueNotSetError

HERE = re.escape(__file__)


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


def test_an_unsaved_proxy_of_an_earlier_trace_gets_the_same_message_on_either_side() -> None:
    model = NNsight(mlp())
    x = torch.randn(2, 8)
    with model.trace(x):
        unsaved = model[0].output
    for use in (lambda: unsaved[:, 3], lambda: model[1].output + unsaved, lambda: unsaved.save()):
        with pytest.raises(TracingError) as caught:
            with model.trace(x):
                use()
        message = str(caught.value)
        assert "proxy model[0].output" in message and "comes from an earlier trace" in message
        assert "call .save() on it in that trace" in message and "argument_" not in message
        assert re.search(rf"traced at {HERE}:\d+", message)
    assert hook_count(model._model) == 0


def test_messages_name_module_values_and_gradients_as_written() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)):
        grad = model[2].output.grad.save()  # saved, but nothing calls backward()
    with pytest.raises(ValueNotSetError) as caught:
        grad.value
    message = str(caught.value)
    assert message.startswith(".grad of model[2].output (traced at")
    assert "no backward pass reached it" in message and "call .backward()" in message
    assert "grad_0" not in message and "call .save()" not in message


def test_reading_value_inside_the_trace_says_the_trace_has_not_run() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)):
        hidden = model[0].output.save()
        with pytest.raises(ValueNotSetError, match=r"has not run yet.*after the block") as caught:
            hidden.value
        assert "save()" not in str(caught.value)


def test_an_unsaved_value_after_the_trace_says_to_save_it() -> None:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)):
        hidden = model[0].output * 2
        model.output.save()
    with pytest.raises(ValueNotSetError, match=r"'mul_0' \(traced at .*call .save\(\)"):
        hidden.value


class WithSpare(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(4, 4)
        self.spare = torch.nn.Linear(4, 4)  # never called by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_a_module_that_never_ran_says_so_once_without_a_next_hint() -> None:
    model = NNsight(WithSpare())
    with pytest.raises(TracingError) as caught:
        with model.trace() as tracer:
            for _ in range(4):  # four invokes reading it: one line
                with tracer.invoke(torch.randn(1, 4)):
                    model.spare.output.save()
    message = str(caught.value)
    assert message.count("model.spare.output") == 1 and "did not run" in message
    assert ".next()" not in message
    with pytest.raises(TracingError, match=r"call 1 .*ran 1 time\(s\).*\.next\(\) calls"):
        with model.trace(torch.randn(1, 4)):
            model.used.next().output.save()
    assert hook_count(model._model) == 0


def test_text_given_to_nnsight_says_to_use_language_model() -> None:
    model = NNsight(mlp())
    with pytest.raises(TypeError) as caught:  # what the module raises, unchanged
        with model.trace("The Eiffel Tower is in"):
            model.output.save()
    assert "LanguageModel" in notes(caught.value) and "tokeniz" in notes(caught.value)
    assert hook_count(model._model) == 0


def test_a_replacement_of_the_wrong_width_names_the_line_that_set_it() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    model = NNsight(net)
    x = torch.randn(2, 8)
    with pytest.raises(ValidationError) as caught:
        with model.trace(x, validate=True):
            line = sys._getframe().f_lineno + 1
            model[0].output = torch.zeros(2, 5)
    message = str(caught.value)
    assert f"{__file__}:{line}" in message and "(2, 5)" in message and "(2, 8)" in message
    with pytest.raises(RuntimeError) as caught:  # off: LayerNorm's own error, with a note
        with model.trace(x):
            line = sys._getframe().f_lineno + 1
            model[0].output = torch.zeros(2, 5)
    assert f"setting model[0].output (traced at {__file__}:{line})" in notes(caught.value)
    assert hook_count(net) == 0
    with model.trace(x, validate=True):  # the right width is fine
        model[0].output = torch.zeros(2, 8)
        out = model.output.save()
    assert torch.allclose(out.value, net[1](torch.zeros(2, 8)))
