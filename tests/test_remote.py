"""Remote execution on a local Ray cluster: traces with ``remote=True`` run on a worker and give
the same values as a local run, bit for bit; errors come back with their type and the user's
line; bad requests, dead workers and slow ones give clear errors; many clients share a worker."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from model_helpers import hooked, mlp

from nnsight import ExecutionError, LanguageModel, NNsight, SerializationError, TracingError

ray = pytest.importorskip("ray")
pytest.importorskip("transformers")

from nnsight import remote  # noqa: E402  (after the skip: it needs ray)
from nnsight.models.tiny import save_language_model  # noqa: E402
from nnsight.remote import messages  # noqa: E402

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local Ray cluster with two workers: a LanguageModel (by its directory) and a module.
    Both sides run torch on one thread (Ray's workers do): bit-for-bit equality needs the same
    reduction order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="tests")
    directory = save_language_model(str(tmp_path_factory.mktemp("gpt2")), "gpt2")
    net = mlp()
    remote.serve(directory)
    remote.serve(net, name="mlp")
    try:
        yield {"dir": directory, "net": net}
    finally:
        for name in (directory, "mlp"):
            remote.stop(name)
        ray.shutdown()
        torch.set_num_threads(threads)


def both(model: Any, run: Any) -> tuple[Any, Any]:
    """``run(model, remote)`` locally and remotely."""
    return run(model, None), run(model, True)


def values(saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {name: proxy.value for name, proxy in saved.items()}


def test_a_remote_trace_equals_a_local_one_bit_for_bit(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])  # weights stay on meta here: only the worker has them

    def run(model: LanguageModel, where: bool | None) -> dict[str, Any]:
        with model.trace(remote=where) as tracer:
            with tracer.invoke(PROMPT):
                clean = model.transformer.h[0].output[0]
                first = model.transformer.h[-1].output[0].t[0].save()
            with tracer.invoke("The Colosseum is in"):
                model.transformer.h[0].output[0].t[-1] = clean.t[-1]
                model.transformer.h[1].mlp.output[:, -1] *= 0.5
                logits = model.lm_head.output.save()
        return values({"first": first, "logits": logits})

    local, far = both(model, run)
    assert local.keys() == far.keys()
    for name in local:
        assert torch.equal(local[name], far[name]), name


def test_generate_and_gradients_run_remotely_too(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])

    def run(model: LanguageModel, where: bool | None) -> dict[str, Any]:
        with model.generate(PROMPT, max_new_tokens=3, remote=where):
            model.lm_head.next().output[:, -1, 7] = 1e4
            ids = model.generator.output.save()
        with model.trace(PROMPT, remote=where):
            states = model.transformer.h[1].output[0]
            grad = states.grad.save()
            model.lm_head.output[0, -1].max().backward()
        return values({"ids": ids, "grad": grad})

    local, far = both(model, run)
    assert torch.equal(local["ids"], far["ids"]) and torch.equal(local["grad"], far["grad"])
    assert far["ids"][0, -2] == 7  # the edit reached the worker's generation


def test_a_module_served_by_name(cluster: dict[str, Any]) -> None:
    net = cluster["net"]
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x, remote="mlp", remote_include_output=True) as tracer:
        hidden = model[1].output.save()
        model[2].output[:, 0] = 0
    with torch.no_grad():
        expected = net[:2](x)
    assert torch.equal(hidden.value, expected)

    def zero_first(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, 0] = 0
        return out

    with torch.no_grad(), hooked(net[2], zero_first):
        assert torch.equal(tracer.output, net(x))  # remote_include_output: the edited output
    with pytest.raises(TracingError, match="remote='<the name"):
        with model.trace(x, remote=True):
            model.output.save()


def test_an_error_comes_back_with_its_type_and_the_users_line(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])
    with pytest.raises(IndexError) as caught:
        with model.trace(PROMPT, remote=True):
            line = sys._getframe().f_lineno + 1
            model.lm_head.output[0, 100].save()
    error = caught.value
    assert isinstance(error, ExecutionError) and f"{__file__}:{line}" in str(error)
    assert "remote worker" in "\n".join(error.__notes__)
    with model.trace(PROMPT, remote=True):  # the worker keeps serving
        logits = model.lm_head.output.save()
    assert logits.shape == (1, 8, model.config.vocab_size)


def test_code_is_refused_before_anything_is_sent(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])
    worker = ray.get_actor(cluster["dir"], namespace="nnsight")
    before = ray.get(worker.__ray_call__.remote(lambda self: self.requests))
    with pytest.raises(SerializationError, match=r"node '<lambda>_0' \(traced at .*test_remote"):
        with model.trace(PROMPT, remote=True) as tracer:
            tracer.apply(lambda t: t * 2, model.lm_head.output).save()
    assert ray.get(worker.__ray_call__.remote(lambda self: self.requests)) == before


def test_bad_requests_get_an_error_response_and_the_worker_goes_on(cluster: dict[str, Any]) -> None:
    worker = ray.get_actor(cluster["dir"], namespace="nnsight")
    for data in (b"garbage", b"NNSIGHT\x00\x00\x01\x92\x90\xc4\x00", b"\x00" * 100):
        body = messages.read_response(ray.get(worker.run.remote(data)))
        assert body[0] == "error" and body[1] == "SerializationError"
    model = LanguageModel(cluster["dir"])
    with model.trace(PROMPT, remote=True):
        out = model.lm_head.output.save()
    assert out.shape[0] == 1


def test_a_dead_or_missing_worker_is_a_clear_error_not_a_hang(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])
    with pytest.raises(ConnectionError, match="no remote worker is called 'nobody'"):
        with model.trace(PROMPT, remote="nobody"):
            model.output.save()
    remote.serve(mlp(), name="doomed")
    remote.stop("doomed")
    small = NNsight(mlp())
    with pytest.raises(ConnectionError, match="doomed"):
        with small.trace(torch.randn(2, 8), remote="doomed"):
            small.output.save()
    with pytest.raises(TimeoutError, match="did not answer within"):
        with model.trace(PROMPT, remote=True, remote_timeout=1e-4):
            model.output.save()


def test_many_clients_at_once_get_their_own_results(cluster: dict[str, Any]) -> None:
    prompts = [PROMPT, "The cat sat on the mat", "Paris is in France", "The dog ran"]
    model = LanguageModel(cluster["dir"])
    expected = {}
    for prompt in prompts:
        with model.trace(prompt):
            expected[prompt] = model.lm_head.output.save()
    results: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []

    def client(prompt: str) -> None:
        try:
            own = LanguageModel(cluster["dir"])  # one wrapper per thread: a trace is per wrapper
            with own.trace(prompt, remote=True):
                logits = own.lm_head.output.save()
            results[prompt] = logits.value
        except BaseException as error:  # a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=client, args=(p,)) for p in prompts * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for prompt in prompts:
        assert torch.equal(results[prompt], expected[prompt].value)

    @ray.remote(num_cpus=0)
    def task(directory: str, prompt: str) -> torch.Tensor:
        from nnsight import LanguageModel

        own = LanguageModel(directory)
        with own.trace(prompt, remote=True):
            logits = own.lm_head.output.save()
        return logits.value

    outputs = ray.get([task.remote(cluster["dir"], p) for p in prompts])
    for prompt, output in zip(prompts, outputs, strict=True):
        assert torch.equal(output, expected[prompt].value)


def test_threads_looking_up_a_worker_at_once_all_find_it(cluster: dict[str, Any]) -> None:
    # Ray's own lookup from several threads at once can fail as if there were no such actor
    # (ray-project/ray#41324): the client looks names up one at a time.
    from nnsight.remote import actor

    for _ in range(5):
        actor._forget(cluster["dir"])
        barrier = threading.Barrier(16)
        found: list[Any] = []

        def look(barrier: threading.Barrier, found: list[Any]) -> None:
            barrier.wait()
            found.append(actor._find(ray, cluster["dir"]))

        threads = [threading.Thread(target=look, args=(barrier, found)) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(found) == 16 and len({id(handle) for handle in found}) == 1


def session_patching(model: Any, remote: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    with model.session():
        with model.trace(PROMPT, remote=remote):
            clean = model.transformer.h[0].output[0][:, -1]  # not saved: kept for the next
            first = model.lm_head.output.save()
        with model.trace("The famous Colosseum is in the city of", remote=remote):
            model.transformer.h[0].output[0][:, -1] = clean
            patched = model.lm_head.output.save()
    return first.value, patched.value


def test_a_remote_session_is_one_request_and_equals_a_local_one(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])
    local = session_patching(model, None)
    worker = ray.get_actor(cluster["dir"], namespace="nnsight")
    before = ray.get(worker.__ray_call__.remote(lambda self: self.requests))
    remote_values = session_patching(LanguageModel(cluster["dir"]), True)
    assert ray.get(worker.__ray_call__.remote(lambda self: self.requests)) == before + 1
    for got, want in zip(remote_values, local, strict=True):
        assert torch.equal(got, want)


def test_an_error_in_a_remote_sessions_later_trace_names_its_line(cluster: dict[str, Any]) -> None:
    model = LanguageModel(cluster["dir"])
    with pytest.raises(ExecutionError, match=r"test_remote.py:\d+"):
        with model.session():
            with model.trace(PROMPT, remote=True):
                first = model.lm_head.output.save()
            with model.trace(PROMPT, remote=True):
                (model.lm_head.output @ torch.ones(3, 3)).save()  # wrong shape: fails there
    assert first.shape[0] == 1  # the trace before the error has its values
