"""model.session(): traces run in order when the block ends; a value of an earlier trace used
in a later one is kept for it (without .save()), against plain PyTorch on the same weights."""

from __future__ import annotations

import pytest
import torch
from model_helpers import mlp

from nnsight import NNsight, TracingError

pytestmark = pytest.mark.local_only("a session runs its traces locally")


def test_an_earlier_traces_value_feeds_a_later_trace_without_save() -> None:
    net = mlp()
    clean, corrupt = torch.randn(2, 8), torch.randn(2, 8)
    model = NNsight(net)
    with model.session() as session:
        with model.trace(clean):
            hidden = model[2].output  # not saved
            clean_out = model.output.save()
        with model.trace(corrupt):
            model[2].output = hidden
            patched = model.output.save()
        with model.trace(corrupt):
            untouched = model.output.save()
        assert len(session.traces) == 3  # nothing has run yet
    kept = net[2](net[1](net[0](clean)))
    assert torch.equal(patched.value, net[6](net[5](net[4](net[3](kept)))))
    assert torch.equal(clean_out.value, net(clean)) and torch.equal(untouched.value, net(corrupt))


def test_values_nothing_later_needs_are_freed_as_in_one_trace() -> None:
    model = NNsight(mlp())
    with model.session():
        with model.trace(torch.randn(1, 8)):
            unused = model[0].output * 2
            model[2].output.save()
        with model.trace(torch.randn(1, 8)):
            model.output.save()
    assert not unused.node.done()


def test_an_error_in_a_block_runs_no_trace_and_leaves_nothing_hooked() -> None:
    net = mlp()
    model = NNsight(net)
    with pytest.raises(ZeroDivisionError):
        with model.session():
            with model.trace(torch.randn(1, 8)):
                first = model.output.save()
            1 / 0
    assert not first.node.done()
    assert all(not module._forward_hooks for module in net.modules())
    x = torch.randn(1, 8)
    with model.trace(x):  # the model is clean and free again
        out = model.output.save()
    assert torch.equal(out.value, net(x))


def test_nested_sessions_a_later_stop_and_remote_are_refused() -> None:
    model = NNsight(mlp())
    with pytest.raises(TracingError, match="sessions cannot be nested"):
        with model.session(), model.session():
            pass
    with pytest.raises(TracingError, match=r"tracer.stop\(\) at .*test_session.py:\d+ in a "):
        with model.session():
            with model.trace(torch.randn(1, 8)) as tracer:
                tracer.stop()  # the first trace may stop
            with model.trace(torch.randn(1, 8)) as tracer:
                tracer.stop()
    with pytest.raises(TracingError, match="a session runs all its traces in one place"):
        with model.session():
            with model.trace(torch.randn(1, 8)):
                model.output.save()
            with model.trace(torch.randn(1, 8), remote="anywhere"):
                model.output.save()


def test_a_session_leaks_no_graph() -> None:
    import gc
    import weakref

    model = NNsight(mlp())
    with model.session() as session:
        with model.trace(torch.randn(1, 8)) as first:
            hidden = model[2].output
        with model.trace(torch.randn(1, 8)) as second:
            model[2].output = hidden
            model.output.save()
    graphs = [weakref.ref(first.graph), weakref.ref(second.graph)]
    del session, first, second, hidden
    gc.collect()
    assert [graph() for graph in graphs] == [None, None]


def test_progress_shows_a_bar_over_the_sessions_traces(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    model = NNsight(mlp())
    with model.session(progress=True):
        for _ in range(3):
            with model.trace(torch.randn(1, 8)):
                model.output.save()
    err = capsys.readouterr().err
    assert "session: 100%" in err and "3/3" in err
