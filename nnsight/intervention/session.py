"""``with model.session():`` — several traces in one block (modern nnsight's ``session``).

The traces do not run at the end of their own blocks: they run one after another, in order,
when the session ends (with ``remote=True`` on its traces: on the worker, as one request). So
the session knows, before anything runs, which values a later trace takes from an earlier
one, and only those are kept: a proxy of an earlier trace can be used in a later one without
``.save()``. Such a use adds a ``null`` node (a save) for it to the earlier
graph, and to the later graph a node that reads the kept value when that graph runs (after
the earlier one). Everything else is freed as in a single trace.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..tracing._source import format_source, user_source
from .progress import trace_bar

if TYPE_CHECKING:
    from ..models.NNsight import NNsight
    from ..tracing.Node import Node
    from .tracer import Tracer


#: The graphs of the session running in this thread, by trace index (``earlier_value``).
_running = threading.local()


def earlier_value(trace: int, node: int) -> Any:
    """The value of node ``node`` of trace ``trace`` of the session now running: the target
    of a node standing for an earlier trace's value (kept there by a save). Plain numbers as
    arguments, so it travels over the wire (``nnsight.earlier_value``)."""
    graphs = getattr(_running, "graphs", None)
    if not graphs or not 0 <= trace < len(graphs) or not 0 < node < len(graphs[trace]._nodes):
        raise ValueError(f"no value of node {node} of trace {trace} in a running session")
    return graphs[trace]._core.value(node)


@contextlib.contextmanager
def running(graphs: list[Any]) -> Iterator[None]:
    """Makes ``graphs`` the session ``earlier_value`` reads from, for the block."""
    before = getattr(_running, "graphs", None)
    _running.graphs = graphs
    try:
        yield
    finally:
        _running.graphs = before


class TraceSession:
    """What ``model.session()`` returns; its traces run when the block ends, in order.

    Attributes:
        traces: The session's traces, in the order they were written.
    """

    def __init__(self, model: NNsight, progress: bool = False) -> None:
        self.model = model
        self.progress = progress
        self.traces: list[Tracer] = []
        self._source = user_source(2)
        self._ran = False

    def __enter__(self) -> TraceSession:
        shared = self.model._session
        if shared.block is not None:
            raise TracingError(
                f"a session is already open on this model (at {format_source(self._source)}): "
                "sessions cannot be nested"
            )
        if shared.tracer is not None:
            raise TracingError(
                f"model.session() at {format_source(self._source)} inside an open trace: "
                "open the session first and the traces inside it"
            )
        shared.block = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.model._session.block = None
        pending = list(self.traces)
        graphs = [tracer.graph for tracer in pending]
        try:
            if exc_type is None and any(tracer.remote is not None for tracer in pending):
                from ..remote.client import run_session_remotely  # the remote extra

                run_session_remotely(pending)  # one request; finished below
                self._ran = True
            elif exc_type is None:
                bar = trace_bar(len(pending)) if self.progress else None
                try:
                    while pending:
                        tracer = pending.pop(0)
                        try:
                            with running(graphs):
                                tracer._run()
                        finally:
                            tracer._finish()
                        if bar is not None:
                            bar.update(1)
                finally:
                    if bar is not None:
                        bar.close()
                self._ran = True
        finally:
            for tracer in pending:  # run remotely, or not run (an error above or in the block)
                tracer._finish()
            self.traces.clear()  # the kept values go with the graphs, unless saved

    def defer(self, tracer: Tracer) -> None:
        """Runs ``tracer`` when the session ends instead of now."""
        if self.traces and (tracer.remote is None) != (self.traces[0].remote is None):
            raise TracingError(
                f"the trace at {format_source(tracer._source)} runs "
                f"{'here' if tracer.remote is None else 'remotely'} and the session's first "
                "does not: a session runs all its traces in one place (remote=True on all, "
                "one request, or on none)"
            )
        self.traces.append(tracer)


def link_earlier(node: Node, graph: Any, used_at: tuple[str, int]) -> Node | None:
    """For a node of an earlier trace of the open session used in ``graph``: keeps its
    value (a save in its own graph) and returns a node of ``graph`` that reads it. None when
    ``node`` is not one (the caller raises what it raises for another graph's node)."""
    earlier = node.graph
    block = getattr(earlier, "_session_block", None)
    if block is None or block._ran or getattr(graph, "_session_block", None) is not block:
        return None
    earlier.tracing = True
    try:
        earlier.add("null", None, [node])
    finally:
        earlier.tracing = False
    index = [tracer.graph for tracer in block.traces].index(earlier)  # type: ignore[union-attr]
    proxy = graph.add(target=earlier_value, args=[index, node.id])
    return proxy.node  # type: ignore[no-any-return]
