"""``model.edit()``: interventions that apply to every later trace of a model.

``with model.edit() as (tracer, edited):`` records, on ``edited`` (a second wrapper of the
same module; with ``inplace=True``, ``model`` itself), an intervention graph that is never run
itself. Every later trace of ``edited`` replays it, node by node, at the start of each of its
invokes, as if its code had been written there: reads of module values become the invoke's
reads, replacements its replacements. So an edit sees and changes each invoke's own rows, and
what the trace writes after it sees the edited values. ``clear_edits()`` drops them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..tracing._source import format_source
from ..tracing._walk import map_structure
from ..tracing.Node import Node
from .envoy import parse_argument_key
from .tracer import Invoke, Tracer

if TYPE_CHECKING:
    from ..models.NNsight import NNsight
    from .graph import InterventionGraph

#: Reserved targets an edit cannot hold: a value saved or a gradient read has no later trace
#: to land in.
_REFUSED = {"null": ".save()", "grad": ".grad"}


class EditTracer(Tracer):
    """The tracer of a ``model.edit()`` block: one invoke without inputs (an edit applies to
    whatever later traces get), no scan, and at the end the graph is kept, not run."""

    def __init__(self, model: NNsight) -> None:
        super().__init__(model, (), {}, scan=False)

    def __enter__(self) -> EditTracer:
        super().__enter__()
        invoke = Invoke(0, (), {}, 0, 1)
        self._invokes.append(invoke)
        self._invoke = invoke
        self._reads.open_invoke(0, 0, 1, None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._close_invoke()
        try:
            if exc_type is None:
                check_replayable(self.graph)
                self.model._edits.append(self.graph)
        finally:
            self._leave(finish=True)


class EditBlock:
    """What ``model.edit()`` returns: ``with model.edit() as (tracer, edited):``."""

    def __init__(self, model: NNsight, inplace: bool) -> None:
        self.edited = model if inplace else model._edited_copy()
        self.tracer = EditTracer(self.edited)

    def __enter__(self) -> tuple[EditTracer, NNsight]:
        return self.tracer.__enter__(), self.edited

    def __exit__(self, *exc: Any) -> None:
        self.tracer.__exit__(*exc)


def check_replayable(graph: InterventionGraph) -> None:
    """Refuses, naming the user's line, what an edit cannot apply to later traces."""
    for node in graph._all_nodes():
        target = node.target
        what = _REFUSED.get(target) if isinstance(target, str) else None
        if what is None and getattr(target, "__name__", None) == "stop_run":
            what = "tracer.stop()"
        if what is not None:
            raise TracingError(
                f"{what} at {format_source(node.source)} inside model.edit(): an edit changes "
                "what later traces compute; save values, read gradients and stop in the "
                "traces themselves"
            )


def replay(tracer: Tracer, graph: InterventionGraph) -> None:
    """Adds ``graph``'s nodes (an edit) to ``tracer``'s graph in its open invoke."""
    envoys = {envoy.path: envoy for envoy in tracer.model._envoy.modules()}
    reads = tracer._reads
    mapped: dict[int, Any] = {}

    def new(item: Any) -> Any:
        return map_structure(item, lambda node: mapped[node.id], Node)

    def at_call(key: str, act: Any) -> Any:
        parsed = parse_argument_key(key)
        assert parsed is not None  # an edit's module reads are all keyed so
        path, kind, call = parsed
        envoy = envoys[path]
        before = reads.call(envoy)
        reads.set_call(envoy, call)
        try:
            return act(envoy, kind)
        finally:
            reads.set_call(envoy, before)

    for node in graph._all_nodes():
        target = node.target
        if target == "argument":
            key = node.args[0]
            if parse_argument_key(key) is None:  # the root module's: this graph has its own
                root = tracer.graph._core.root()
                mapped[node.id] = None if root is None else tracer.graph._node(root)
            else:
                mapped[node.id] = at_call(key, tracer.module_value)
        elif target == "swap":
            current, value = node.args
            replacement = new(value)
            at_call(
                current.args[0],
                lambda envoy, kind, r=replacement: tracer.set_module_value(envoy, kind, r),
            )
        else:
            mapped[node.id] = tracer.graph.add(
                target=target, args=new(node.args), kwargs=new(node.kwargs)
            )
