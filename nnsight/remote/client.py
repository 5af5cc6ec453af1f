"""The client side of ``remote=True``: send the trace, wait, put the saved values in place."""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import errors
from .._core import set_classes
from ..errors import ExecutionError, NNsightError, SerializationError, TracingError
from ..intervention.proxy import SavedProxy
from ..serialization import MESSAGE_SOURCE as WORKER_LINE
from ..serialization import dumps
from ..tracing._source import format_source
from . import messages

if TYPE_CHECKING:
    from ..intervention.tracer import Tracer

#: Seconds a remote trace waits for its worker before giving up (``remote_timeout=``).
DEFAULT_TIMEOUT_S = 600.0


def worker_name(tracer: Tracer) -> str:
    """The worker a trace goes to: ``remote="name"``, or its model's key."""
    if isinstance(tracer.remote, str):
        return tracer.remote
    key = getattr(tracer.model, "_model_key", None)
    if isinstance(key, str):
        return key
    raise TracingError(
        "remote=True sends the trace to the worker serving this model's key, and this model "
        "has none (it wraps a module): pass remote='<the name given to nnsight.remote.serve>'"
    )


def run_remotely(tracer: Tracer, send: Callable[[bytes], bytes] | None = None) -> Any:
    """Runs ``tracer``'s graph on its worker; the saved proxies get the values computed there.
    Returns the model's output when ``remote_include_output=True``, else None. ``send`` takes
    the request and returns the response (by default: to the Ray worker the trace names)."""
    from . import actor

    name = "in-process" if send is not None else worker_name(tracer)
    data = _request(tracer)
    response = send(data) if send is not None else actor.call(name, data, tracer.remote_timeout)
    return _apply(tracer, name, response)


def run_session_remotely(tracers: list[Tracer]) -> None:
    """Runs a session's traces on their worker as one request, in order (see ``session``);
    each trace's saved proxies get their values, and ``output`` its output when asked for."""
    from . import actor

    names = {worker_name(tracer) for tracer in tracers}
    if len(names) != 1:
        raise TracingError(
            f"a session's traces go to one worker, and these name {len(names)}: "
            f"{', '.join(sorted(names))}"
        )
    (name,) = names
    data = messages.session_request([_request(tracer) for tracer in tracers])
    timeout = tracers[0].remote_timeout
    responses = messages.read_session_response(actor.call(name, data, timeout))
    for tracer, response in zip(tracers, responses, strict=False):
        tracer.output = _apply(tracer, name, response)
    if len(responses) < len(tracers):  # the worker stops at an error, which _apply raised
        raise SerializationError("a session response with fewer traces than the request")


def _request(tracer: Tracer) -> bytes:
    if tracer._skips or tracer._caches:
        what = "envoy.skip(...)" if tracer._skips else "tracer.cache(...)"
        raise NotImplementedError(
            f"{what} does not travel to a remote worker yet: run this trace locally"
        )
    graph = tracer.graph
    graph._ran = True  # it runs, there: a later use of its proxies is a use after its trace
    return messages.request(
        dumps(graph),
        [(i.args, i.kwargs, i.start, i.size) for i in tracer._invokes],
        tracer._forward_kwargs,
        tracer._generate,
        [proxy._id for proxy in graph.saved],
        tracer.remote_include_output,
    )


def _apply(tracer: Tracer, name: str, response: bytes) -> Any:
    """Puts a response's saved values in ``tracer``'s proxies; raises a remote error here."""
    graph = tracer.graph
    body = messages.read_response(response)
    if body[0] == "error":
        raise _local_error(tracer, name, *body[1:])
    _, values, output = body
    saved = {proxy._id for proxy in graph.saved}
    for id, value in values:
        if id in saved:
            graph._core.replace_value(id, value)
    set_classes(graph.saved, SavedProxy)
    graph.saved.clear()
    return output


def _local_error(
    tracer: Tracer,
    worker: str,
    kind: str,
    message: str,
    node_id: int | None,
    cause_kind: str | None,
    cause_message: str,
    notes: list[str],
) -> BaseException:
    """The error a remote run raised, as the local one: its type (ours or a builtin's), its
    message, and for a node's error the user's line here (the worker's lines mean nothing)."""
    graph = tracer.graph
    node = (
        graph._node(node_id) if type(node_id) is int and 0 < node_id < len(graph._nodes) else None
    )
    # The worker's nodes are traced at `<node>:<id>`: the user's lines are here.
    message = _local_lines(graph, message)
    notes = [_local_lines(graph, note) for note in notes]
    if kind == "ExecutionError" and node is not None and cause_kind is not None:
        error = node._execution_error(_rebuild(cause_kind, cause_message))
    else:
        error = _rebuild(kind, message)
        if isinstance(error, ExecutionError) and node is not None:
            error.node_name = node.name
    error.add_note(f"(raised by the remote worker {worker!r})")
    for note in notes:
        if "remote worker>" not in note:  # the worker's own line for the trace
            error.add_note(note)
    return error


def _local_lines(graph: Any, text: str) -> str:
    """``text`` with each worker line ``<node>:<id>`` replaced by node ``id``'s line here."""

    def local(match: re.Match[str]) -> str:
        id = int(match.group(1))
        if not 0 < id < len(graph._nodes):
            return match.group(0)
        return format_source(graph._node(id).source)

    return re.sub(re.escape(WORKER_LINE) + r":(\d+)", local, text)


def _rebuild(kind: str, message: str) -> BaseException:
    """An exception of the class named ``kind``: one of nnsight's, a builtin exception, or
    else a RuntimeError that names it."""
    ours = getattr(errors, kind, None)
    if isinstance(ours, type) and issubclass(ours, NNsightError):
        error: BaseException = BaseException.__new__(ours)
        BaseException.__init__(error, message)
        if isinstance(error, ExecutionError):
            error.node_name = ""
        return error
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # a constructor that wants more (UnicodeDecodeError)
            pass
    return RuntimeError(f"{kind}: {message}")
