"""The Ray side: the worker actor, starting it (``serve``) and calling it.

Ray is imported only here, when remote execution is used (the ``remote`` extra).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import torch

from .worker import Worker


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "remote execution runs on Ray: pip install '.[remote]' from a checkout of nnsight"
        ) from None
    return ray


#: Times a request is sent when Ray says the worker is temporarily unavailable.
_ATTEMPTS = 3

#: The Ray namespace workers live in, whatever namespace the caller's Ray session has.
NAMESPACE = "nnsight"


def connect() -> Any:
    """Ray, connected to the current cluster: the one this process started, else a running
    one (``address="auto"``), else a new local one."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
        except ConnectionError:
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    return ray


#: Handles of the workers this process has called, by Ray session and name. Looking an actor
#: up from several threads at once can fail spuriously in Ray (ray-project/ray#41324: a
#: ``ValueError`` as if there were no such actor), so lookups go one at a time, once a name.
_handles: dict[tuple[str, str], Any] = {}
_handles_lock = threading.Lock()


def _find(ray: Any, name: str) -> Any:
    """The worker called ``name``; ``ValueError`` when there is none."""
    key = (ray.get_runtime_context().get_job_id(), name)  # a new ray.init() is a new job
    with _handles_lock:
        handle = _handles.get(key)
        if handle is None:
            handle = _handles[key] = ray.get_actor(name, namespace=NAMESPACE)
        return handle


def _forget(name: str) -> None:
    with _handles_lock:
        for key in [key for key in _handles if key[1] == name]:
            del _handles[key]


@functools.cache
def _actor_class() -> Any:
    # One request at a time: a run hooks the model, and two runs' hooks would meet. In any
    # order: requests are independent, and in order Ray holds each one until the one sent
    # before it arrives, which under load can time out (ActorUnavailableError).
    options: dict[str, Any] = {"max_concurrency": 1, "num_cpus": 0, "max_restarts": 0}
    try:
        return _ray().remote(allow_out_of_order_execution=True, **options)(Worker)
    except (ValueError, TypeError):  # a Ray without the option: requests run in order
        return _ray().remote(**options)(Worker)


def serve(
    model_key_or_module: str | torch.nn.Module, name: str | None = None, **model_kwargs: Any
) -> str:
    """Starts a worker holding the model, in the current Ray cluster (``ray.init()`` first if
    there is none: a local one), and returns its name. The worker holds
    ``LanguageModel(model_key, **model_kwargs)`` with its weights loaded, or the given module
    (shipped once; a Hugging Face model as a ``LanguageModel``). ``name`` defaults to the model
    key; a module needs one. Traces reach it with ``remote=True`` (by the model's key) or
    ``remote="name"``. Returns once the model is loaded, raising what loading raised."""
    if name is None:
        if not isinstance(model_key_or_module, str):
            raise TypeError("serve(module) needs name=: traces find their worker by it")
        name = model_key_or_module
    ray = connect()
    _forget(name)  # a worker of this name may have been stopped elsewhere
    try:
        _find(ray, name)
    except ValueError:
        pass
    else:
        raise ValueError(
            f"a worker called {name!r} is running already: use it, or stop it first with "
            f"nnsight.remote.stop({name!r})"
        )
    worker = (
        _actor_class()
        .options(name=name, namespace=NAMESPACE, lifetime="detached")
        .remote(model_key_or_module, model_kwargs)
    )
    try:
        ray.get(worker.ready.remote())
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"the worker {name!r} could not start: {exc}") from None
    return name


def stop(name: str) -> None:
    """Stops the worker called ``name`` (no error if there is none)."""
    ray = connect()
    try:
        ray.kill(_find(ray, name))
    except ValueError:
        pass
    _forget(name)


def call(name: str, request: bytes, timeout: float | None) -> bytes:
    """The worker ``name``'s response to ``request``; a clear error when there is no such
    worker, it died, or it did not answer within ``timeout`` seconds."""
    from .client import DEFAULT_TIMEOUT_S

    ray = connect()
    try:
        worker = _find(ray, name)
    except ValueError:
        raise ConnectionError(
            f"no remote worker is called {name!r}: start one with "
            f"nnsight.remote.serve(..., name={name!r})"
        ) from None
    seconds = DEFAULT_TIMEOUT_S if timeout is None else timeout
    deadline = time.monotonic() + seconds
    pending = worker.run.remote(request)
    try:
        for attempt in range(_ATTEMPTS):
            try:
                left = max(deadline - time.monotonic(), 0.0)
                return ray.get(pending, timeout=left)  # type: ignore[no-any-return]
            except ray.exceptions.ActorUnavailableError:
                # Transient (the actor is alive; a message was late): the request changes
                # nothing on the worker, so sending it again is safe.
                if attempt + 1 == _ATTEMPTS or time.monotonic() >= deadline:
                    raise
                pending = worker.run.remote(request)
        raise AssertionError("unreachable")
    except ray.exceptions.GetTimeoutError:
        ray.cancel(pending)
        raise TimeoutError(
            f"the remote worker {name!r} did not answer within {seconds:g} s "
            "(remote_timeout= sets the limit)"
        ) from None
    except ray.exceptions.RayActorError as exc:
        _forget(name)  # the next call looks the name up again: a new worker may serve it
        raise ConnectionError(f"the remote worker {name!r} died: {exc}") from None
