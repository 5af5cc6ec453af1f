"""Running an intervention graph interleaved with the model's real forward pass.

Hooks go only on the modules the graph reads or writes, for the duration of one run, and are
removed afterwards even when the run raises. Each hook counts its module's calls; when a call
is one the graph asked for (``<path>.output.<call>``), every argument node under that key gets
its invoke's rows of the activation (``set_value``, which runs everything that becomes ready),
and a swap made ready by it replaces those rows before the model goes on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from ..errors import ExecutionError, TracingError
from ..tracing import Node
from ..tracing._source import format_source
from .batching import Rows, narrow, rebuild_like, splice
from .envoy import spell_path
from .graph import InterventionGraph

#: One argument node waiting for a module call, with the rows of its invoke.
Entry = tuple[Node, Rows]


class Interleaver:
    """Hooks one model for one run of ``graph``.

    Args:
        graph: The trace's graph, compiled for this run.
        modules: Module of each envoy path that the graph uses.
        invoke_rows: Rows of every invoke, in batch order (for gradient-carrying rebuilds).
    """

    def __init__(
        self,
        graph: InterventionGraph,
        modules: dict[str, torch.nn.Module],
        invoke_rows: list[Rows],
    ) -> None:
        self.graph = graph
        self.modules = modules
        self.invoke_rows = invoke_rows
        # path -> kind -> call -> entries
        self.plan: dict[str, dict[str, dict[int, list[Entry]]]] = defaultdict(
            lambda: {"input": {}, "output": {}}
        )
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._handles: list[Any] = []
        for key, names in graph.argument_node_names.items():
            parsed = _parse_key(key)
            if parsed is None:
                continue
            path, kind, call = parsed
            entries = self.plan[path][kind].setdefault(call, [])
            for name in names:
                node = graph.nodes[name]
                _, size, start = node.args
                entries.append((node, Rows(start, size, invoke_rows[0].total)))

    # ----- hooks ------------------------------------------------------------------------------

    def __enter__(self) -> Interleaver:
        try:
            for path, kinds in self.plan.items():
                module = self.modules[path]
                if kinds["input"]:
                    self._handles.append(
                        module.register_forward_pre_hook(self._input_hook(path), with_kwargs=True)
                    )
                if kinds["output"]:
                    self._handles.append(module.register_forward_hook(self._output_hook(path)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _input_hook(self, path: str) -> Callable[..., Any]:
        entries_by_call = self.plan[path]["input"]

        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            call = self._count(path, "input")
            entries = entries_by_call.get(call)
            if entries is None:
                return None
            new = self._intervene(entries, (args, kwargs), path, "input", call)
            if new is None:
                return None
            new_args, new_kwargs = new
            return tuple(new_args), dict(new_kwargs)

        return hook

    def _output_hook(self, path: str) -> Callable[..., Any]:
        entries_by_call = self.plan[path]["output"]

        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            call = self._count(path, "output")
            entries = entries_by_call.get(call)
            if entries is None:
                return None
            return self._intervene(entries, output, path, "output", call)

        return hook

    def _count(self, path: str, kind: str) -> int:
        key = (path, kind)
        call = self.calls[key]
        self.calls[key] = call + 1
        return call

    # ----- one module call --------------------------------------------------------------------

    def _intervene(
        self, entries: list[Entry], activation: Any, path: str, kind: str, call: int
    ) -> Any | None:
        """Feeds the call's value to its argument nodes; returns the value the model should go
        on with, or None to keep the original."""
        graph = self.graph
        original = activation
        pieces: dict[int, Any] = {}
        for node, rows in entries:
            view = narrow(activation, rows)
            node.set_value(view)
            pieces[rows.start] = view
            swap_id = graph._core.swap()
            if swap_id is None:
                continue
            swap = graph._nodes[swap_id]
            if not swap.args or swap.args[0] is not node:
                raise ExecutionError(
                    f"the swap traced at {format_source(swap.source)} became ready at "
                    f"{spell_path(path)}.{kind} (call {call}), which it does not replace: its new "
                    "value depends on something computed later in the forward pass",
                    swap.name,
                )
            replacement = graph.get_swap(view)
            what = _what(swap, path, kind)
            try:
                activation = splice(activation, replacement, rows, lambda: what)  # noqa: B023
            except TracingError as exc:
                raise ExecutionError(str(exc), swap.name) from None
            pieces[rows.start] = narrow(activation, rows)
        if graph.has_grads and len(self.invoke_rows) > 1 and torch.is_grad_enabled():
            # Gradients reach a hook on an invoke's rows only if the model computes from those
            # very views: rebuild the batch from them.
            activation = _join(activation, pieces, self.invoke_rows)
        return None if activation is original else activation

    def unreached(self) -> list[Node]:
        """Argument nodes whose module call never happened (``.next()`` past the last call),
        for those that anything live still needs."""
        missing = []
        for path, kinds in self.plan.items():
            for kind, entries_by_call in kinds.items():
                made = self.calls[(path, kind)]
                for call, entries in entries_by_call.items():
                    if call >= made:
                        missing.extend(node for node, _ in entries if node.remaining_listeners)
        return missing


def _join(activation: Any, pieces: dict[int, Any], invoke_rows: list[Rows]) -> Any:
    parts = [
        pieces[rows.start] if rows.start in pieces else narrow(activation, rows)
        for rows in invoke_rows
    ]
    return _concat(activation, parts, invoke_rows[0].total)


def _concat(original: Any, parts: list[Any], total: int) -> Any:
    if isinstance(original, torch.Tensor):
        if original.dim() == 0 or original.shape[0] != total:
            return original
        return torch.cat(parts, dim=0)
    if isinstance(original, (tuple, list)):
        return rebuild_like(
            type(original),
            [_concat(item, [p[i] for p in parts], total) for i, item in enumerate(original)],
        )
    if isinstance(original, dict):
        return rebuild_like(
            type(original),
            {key: _concat(item, [p[key] for p in parts], total) for key, item in original.items()},
        )
    return original


def _parse_key(key: str) -> tuple[str, str, int] | None:
    """``(path, kind, call)`` of an argument key ``<path>.<output|input>.<call>``."""
    head, _, call = key.rpartition(".")
    path, _, kind = head.rpartition(".")
    if kind not in ("output", "input") or not call.isdigit():
        return None
    return path, kind, int(call)


def _what(swap: Node, path: str, kind: str) -> str:
    return f"setting {spell_path(path)}.{kind} (traced at {format_source(swap.source)})"
