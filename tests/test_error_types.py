"""Errors keep their type: 0.2 code catches ``RuntimeError`` (``IndexError``...) around traces.

A failing op raises ``ValidationError`` (at trace time) or ``ExecutionError`` (at run time) that
is also an instance of what torch raised, with the user's line in the message.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from model_helpers import hook_count, mlp

from nnsight import ExecutionError, NNsight, ValidationError
from nnsight.errors import caused_by

HERE = __file__


def line_of(marker: str) -> int:
    """The line of this file holding ``marker`` in a comment."""
    lines = inspect.getsource(inspect.getmodule(line_of)).splitlines()  # type: ignore[arg-type]
    return next(i for i, line in enumerate(lines, 1) if line.rstrip().endswith(f"# {marker}"))


def test_a_shape_error_at_trace_time_is_a_runtime_error_too() -> None:
    model = NNsight(mlp())
    with pytest.raises(RuntimeError) as caught:
        with model.trace(torch.randn(2, 8), validate=True):
            model[0].output @ torch.ones(3, 3)  # matmul-at-trace
    error = caught.value
    assert isinstance(error, ValidationError)
    assert f"{HERE}:{line_of('matmul-at-trace')}" in str(error)
    cause = error.__cause__
    assert isinstance(cause, RuntimeError) and not isinstance(cause, ValidationError)
    assert hook_count(model._model) == 0


def test_a_run_time_index_error_is_an_index_error_too() -> None:
    net = mlp()
    model = NNsight(net)
    with pytest.raises(IndexError) as caught:
        with model.trace(torch.randn(2, 8)):
            model[0].output[5].save()  # index-at-run
    error = caught.value
    assert isinstance(error, ExecutionError) and error.node_name.startswith("getitem")
    assert f"{HERE}:{line_of('index-at-run')}" in str(error)
    assert isinstance(error.__cause__, IndexError)
    assert hook_count(net) == 0
    with model.trace(torch.randn(2, 8)):  # usable at once
        out = model.output.save()
    assert out.shape == (2, 2)


def test_nnsight_02_style_except_runtime_error_still_works() -> None:
    model = NNsight(mlp())
    caught = None
    try:
        with model.trace(torch.randn(2, 8)):
            (model[0].output @ torch.ones(3, 3)).save()
    except RuntimeError as error:  # what a 0.2 tutorial writes
        caught = error
    assert isinstance(caught, ExecutionError)
    assert "mat" in str(caught.__cause__)


@pytest.mark.local_only("its target is a function of the test")
def test_a_key_error_keeps_its_message_unquoted() -> None:
    model = NNsight(mlp())
    with pytest.raises(KeyError) as caught:
        with model.trace(torch.randn(2, 8)) as tracer:
            tracer.apply(dict.__getitem__, {"a": model[0].output}, "missing").save()
    message = str(caught.value)
    assert message.startswith("node '") and "KeyError" in message


def test_cause_types_that_cannot_be_combined_fall_back_to_ours() -> None:
    cause = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    error = caused_by(ExecutionError, cause, "node 'x' raised")
    assert isinstance(error, ExecutionError) and isinstance(error, UnicodeDecodeError)
    assert str(error) == "node 'x' raised" and error.__cause__ is cause

    class Final(Exception):
        def __init_subclass__(cls, **kwargs: object) -> None:
            raise TypeError("final")

    error = caused_by(ValidationError, Final("no"), "op failed")
    assert type(error) is ValidationError and str(error) == "op failed"
