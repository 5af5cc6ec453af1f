"""Running an intervention graph interleaved with the model's real forward pass.

Hooks go only on the modules the graph reads or writes, for the duration of one run, and are
removed afterwards even when the run raises. Each hook counts its module's calls; when a call
is one the graph asked for (``<path>.output.<call>``), every argument node under that key gets
its invoke's rows of the activation (``set_value``, which runs everything that becomes ready),
and a swap made ready by it replaces those rows before the model goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from .._core import ModuleReads, OutputHook
from ..errors import ExecutionError, TracingError
from ..tracing._source import format_source
from .batching import Rows, join_rows, narrow, splice
from .envoy import spell_path
from .graph import InterventionGraph
from .hooks import HookSet

#: One argument node (its id: the ``Node`` object is only made when an error names it) waiting
#: for a module call, with the rows of its invoke.
Entry = tuple[int, Rows]


#: A module value read, as the core lists them: ``(path, "input" | "output", call, node id,
#: start row, rows)``.
Request = tuple[str, str, int, int, int, int]


class Interleaver:
    """Hooks one model for one run of ``graph``.

    Module outputs are hooked by the core (``nnsight._core.OutputHook``), which plans the run
    from the trace's reads and feeds whole-batch values itself; this class hooks what it hands
    back (module inputs, a module at two paths) and handles its fallback (swaps, rows of
    several invokes).

    Args:
        graph: The trace's graph, with dead code eliminated.
        reads: The module values the trace's envoys read (``ModuleReads``).
        modules: Module of each envoy path.
        invoke_rows: Rows of every invoke, in batch order (for gradient-carrying rebuilds).
    """

    def __init__(
        self,
        graph: InterventionGraph,
        reads: ModuleReads,
        modules: dict[str, torch.nn.Module],
        invoke_rows: list[Rows],
    ) -> None:
        self.graph = graph
        self.reads = reads
        self.modules = modules
        self.invoke_rows = invoke_rows
        self.total = invoke_rows[-1].total if invoke_rows else 0
        self.joins = graph.has_grads and len(invoke_rows) > 1
        #: (path, kind) -> call -> entries, for the reads handled in Python.
        self.plan: dict[tuple[str, str], dict[int, list[Entry]]] = {}
        #: Calls seen per key hooked in Python.
        self.calls: dict[tuple[str, str], int] = {}
        #: What each swap applied so far replaced, as messages spell it (newest last).
        self.applied: list[str] = []
        self._hooks = HookSet()
        self._outputs = OutputHook(graph._core, graph._nodes, self._output_fallback)

    # ----- hooks ------------------------------------------------------------------------------

    def __enter__(self) -> Interleaver:
        try:
            own, fallback = self._outputs.install(self.reads, self.total, RemovableHandle)
            if own or fallback:  # a plain trace has neither
                self._plan(fallback)
                self._plan(own)
                self.calls = dict.fromkeys([(path, kind) for path, kind, *_ in own], 0)
                self._hooks.reserve(len(self.calls))
                for path, kind in self.calls:
                    module = self.modules[path]
                    if kind == "input":
                        self._hooks.forward_pre(module, self._input_hook(path))
                    else:
                        self._hooks.forward(module, self._output_hook(path))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def _plan(self, requests: list[Request]) -> None:
        """Adds ``requests`` to the plan, each with its invoke's rows."""
        rows_of = {(rows.start, rows.size): rows for rows in self.invoke_rows}
        for path, kind, call, node_id, start, size in requests:
            by_call = self.plan.setdefault((path, kind), {})
            by_call.setdefault(call, []).append((node_id, rows_of[start, size]))

    def __exit__(self, *exc: object) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        try:
            self._hooks.remove()
        finally:
            self._outputs.remove()

    def _input_hook(self, path: str) -> Callable[..., Any]:
        key = (path, "input")
        by_call = self.plan[key]
        calls = self.calls

        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            call = calls[key]
            calls[key] = call + 1
            entries = by_call.get(call)
            if entries is None:
                return None
            new = self._intervene(entries, (args, kwargs), key, call)
            if new is None:
                return None
            new_args, new_kwargs = new
            return tuple(new_args), dict(new_kwargs)

        return hook

    def _output_hook(self, path: str) -> Callable[..., Any]:
        """A Python output hook for the module at ``path`` alone (one the core's hook cannot
        take: hooked at two paths, or without hook dicts)."""
        key = (path, "output")
        by_call = self.plan[key]
        calls = self.calls

        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            call = calls[key]
            calls[key] = call + 1
            entries = by_call.get(call)
            if entries is None:
                return None
            return self._intervene(entries, output, key, call)

        return hook

    def _output_fallback(
        self, path: str, call: int, output: Any, fed: tuple[int, int] | None
    ) -> Any:
        """What the core's output hook hands back: with ``fed = (node_id, swap_id)``, that node
        took the whole output and made that swap ready; without, the call's rows belong to
        several invokes."""
        key = (path, "output")
        if fed is None:
            return self._intervene(self.plan[key][call], output, key, call)
        node_id, swap_id = fed
        rows = Rows(0, self.total, self.total)
        return self._swap(swap_id, node_id, rows, output, output, key, call)

    # ----- one module call --------------------------------------------------------------------

    def _intervene(
        self, entries: list[Entry], activation: Any, key: tuple[str, str], call: int
    ) -> Any | None:
        """Feeds the call's value to its argument nodes; returns the value the model should go
        on with, or None to keep the original."""
        graph = self.graph
        core = graph._core
        nodes = graph._nodes
        original = activation
        pieces: dict[int, Any] = {}
        for node_id, rows in entries:
            view = narrow(activation, rows)
            # Node.set_value, minus two Python frames; returns the pending swap, if any.
            swap_id = core.set_value(node_id, view, nodes)
            pieces[rows.start] = view
            if swap_id is None:
                continue
            activation = self._swap(swap_id, node_id, rows, activation, view, key, call)
            pieces[rows.start] = narrow(activation, rows)
        if self.joins and torch.is_grad_enabled():
            # Gradients reach a hook on an invoke's rows only if the model computes from those
            # very views: rebuild the batch from them.
            activation = join_rows(activation, pieces, self.invoke_rows)
        return None if activation is original else activation

    def _swap(
        self,
        swap_id: int,
        node_id: int,
        rows: Rows,
        activation: Any,
        view: Any,
        key: tuple[str, str],
        call: int,
    ) -> Any:
        """``activation`` with ``rows`` replaced by the value of swap ``swap_id``, which
        setting ``node_id`` to ``view`` (those rows of ``activation``) made ready."""
        graph = self.graph
        swap = graph._node(swap_id)
        path, kind = key
        if not swap.args or swap.args[0] is not graph._node(node_id):
            raise ExecutionError(
                f"the swap traced at {format_source(swap.source)} became ready at "
                f"{spell_path(path)}.{kind} (call {call}), which it does not replace: its new "
                "value depends on something computed later in the forward pass",
                swap.name,
            )
        replacement = graph.get_swap(view)
        what = f"setting {spell_path(path)}.{kind} (traced at {format_source(swap.source)})"
        try:
            spliced = splice(activation, replacement, rows, what)
        except TracingError as exc:
            raise ExecutionError(str(exc), swap.name) from None
        self.applied.append(what)
        return spliced

    def unreached(self) -> str | None:
        """What the graph asked of module calls that never happened (``.next()`` past the last
        call), for the argument nodes anything live still needs; None when nothing."""
        missed = [
            (path, "output", call, made, node_id)
            for path, call, made, node_id in self._outputs.unreached()
        ]
        for (path, kind), made in self.calls.items():
            for call, entries in self.plan[path, kind].items():
                if call >= made:
                    missed.extend((path, kind, call, made, node_id) for node_id, _ in entries)
        core = self.graph._core
        first: dict[tuple[str, str, int], tuple[int, int]] = {}  # one line per module call
        for path, kind, call, made, node_id in missed:
            if core.remaining_listeners(node_id):
                first.setdefault((path, kind, call), (made, node_id))
        lines = []
        for (path, kind, call), (made, node_id) in first.items():
            source = format_source(self.graph._node(node_id).source)
            if call == 0:
                lines.append(
                    f"{spell_path(path)}.{kind} (traced at {source}) was never reached: the "
                    "module did not run in this run (is it part of what the model calls?)"
                )
            else:
                lines.append(
                    f"{spell_path(path)}.{kind} of call {call} (traced at {source}) was never "
                    f"reached: the module ran {made} time(s) in this run (check the number of "
                    ".next() calls)"
                )
        return "; ".join(lines) if lines else None
