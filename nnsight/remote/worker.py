"""The worker: runs graph requests on the model it holds (in a Ray actor, see ``serve``).

Each request is decoded (``nnsight.serialization.loads``: names from the allowlist, values as
data, nothing run while reading), its argument nodes are registered as the module reads they
are, and the graph runs interleaved with the model exactly as a local trace would
(``run_graph``). Only the saved values go back. Any error becomes an error response: the
worker keeps serving. After every request the model's parameter gradients are dropped, so no
request sees another's.
"""

from __future__ import annotations

from typing import Any

import torch

from .._core import ROOT_ARGUMENT, ModuleReads
from ..errors import ExecutionError, SerializationError
from ..intervention.envoy import parse_argument_key
from ..intervention.scan import ScannedValue
from ..intervention.session import running
from ..intervention.tracer import Invoke, run_graph
from ..models.NNsight import NNsight
from ..serialization import loads
from ..tracing._source import SOURCE_FINDER
from . import messages

#: The line errors of a remote run are traced at on the worker (the client names its own).
WORKER_SOURCE = ("<remote worker>", 0)


def wrap(model_key_or_module: str | torch.nn.Module, **model_kwargs: Any) -> NNsight:
    """The wrapper a worker runs requests on: a ``LanguageModel`` for a model key or a Hugging
    Face model (weights loaded now), an ``NNsight`` for any other module."""
    if isinstance(model_key_or_module, str) or hasattr(model_key_or_module, "generate"):
        from ..models.LanguageModel import LanguageModel

        return LanguageModel(model_key_or_module, dispatch=True, **model_kwargs)
    return NNsight(model_key_or_module)


class Worker:
    """Holds one wrapped model and runs requests on it, one at a time."""

    def __init__(self, model_key_or_module: str | torch.nn.Module, model_kwargs: dict[str, Any]):
        self.model = wrap(model_key_or_module, **model_kwargs)
        self.requests = 0
        self.drop_grads = True

    @classmethod
    def serving(cls, model: NNsight) -> Worker:
        """A worker running requests on ``model`` itself, in this process (the test suite's
        round trips of every trace through the wire format)."""
        worker = cls.__new__(cls)
        worker.model = model
        worker.requests = 0
        worker.drop_grads = False  # the model is the caller's own: its gradients are theirs
        return worker

    def ready(self) -> str:
        return type(self.model._model).__name__

    def run(self, data: bytes) -> bytes:
        """A request's response (see ``messages``); never raises."""
        self.requests += 1
        try:
            session = messages.session_requests(data)
            return self._run(data) if session is None else self._run_session(session)
        except Exception as exc:
            return messages.error_response(exc)
        finally:
            if self.drop_grads:
                for parameter in self.model._model.parameters():
                    parameter.grad = None

    def _run_session(self, requests: list[bytes]) -> bytes:
        """A session's traces, in order, each able to read what earlier ones kept
        (``earlier_value``); the first error ends it."""
        graphs: list[Any] = []
        responses = []
        with running(graphs):
            for data in requests:
                try:
                    responses.append(self._run(data, graphs))
                except Exception as exc:
                    responses.append(messages.error_response(exc))
                    break
        return messages.session_response(responses)

    def _run(self, data: bytes, session: list[Any] | None = None) -> bytes:
        graph_data, raw_invokes, forward, generate, saved, include_output = messages.read_request(
            data
        )
        model = self.model
        graph = loads(graph_data, model._model)
        if session is not None:
            session.append(graph)  # trace i of the session is graph i
        reads = ModuleReads(
            graph._core, graph._nodes, graph.proxy_class, ScannedValue, SOURCE_FINDER
        )
        envoys = {envoy.path: envoy for envoy in model._envoy.modules()}
        rows = {(start, size) for _, _, start, size in raw_invokes}
        for id in range(1, len(graph._nodes)):
            if graph._core.kind(id) == "argument":
                _register(reads, envoys, rows, graph._node(id).args, id)
        invokes = [
            Invoke(i, args, kwargs, start, size)
            for i, (args, kwargs, start, size) in enumerate(raw_invokes)
        ]
        try:
            output = run_graph(model, graph, reads, invokes, forward, generate, WORKER_SOURCE)
        except ExecutionError as exc:  # the client names the node by id: names are cosmetic
            exc.node_id = graph._core.id_of(exc.node_name)  # type: ignore[attr-defined]
            raise
        values = []
        for id in saved:
            if not 0 < id < len(graph._nodes):
                raise SerializationError(f"saved node {id} is not a node of the graph")
            value = graph._core.value(id)
            if graph._core.done(id):
                values.append((id, value))
        return messages.response(values, output if include_output else None)


def _register(
    reads: ModuleReads,
    envoys: dict[str, Any],
    rows: set[tuple[int, int]],
    args: list[Any],
    id: int,
) -> None:
    """Registers argument node ``id`` (``args``: its key, rows and start) as the module read
    its key names; refuses keys naming no module of the model, or rows no invoke has."""
    if len(args) != 3 or type(args[0]) is not str or args[0] == ROOT_ARGUMENT:
        raise SerializationError(f"argument node {id}: not a module read ({args!r:.80})")
    key, size, start = args
    parsed = parse_argument_key(key)
    envoy = None if parsed is None else envoys.get(parsed[0])
    if parsed is None or envoy is None:
        raise SerializationError(f"argument node {id}: {key!r} names no module of the model")
    if (start, size) not in rows:
        raise SerializationError(f"argument node {id}: rows {start}..{start + size} of no invoke")
    reads.register(envoy, parsed[1], parsed[2], id, start, size)
