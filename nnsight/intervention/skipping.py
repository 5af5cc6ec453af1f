"""``envoy.skip(value)``: a module call that does not run, with ``value`` as its output.

A forward hook cannot keep a module from running, so for the run each skipped module's
``forward`` is shadowed by a wrapper (an instance attribute, put back afterwards, even when
the run raises). The wrapper counts the module's calls; at a skipped call it returns the
value (a proxy's, computed by then from earlier modules, or a constant) without running
the module, and forward hooks then see that value as the output, as they would a real one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ExecutionError
from ..tracing._source import format_source
from .envoy import spell_path

if TYPE_CHECKING:
    from .graph import InterventionGraph

_MISSING = object()


@dataclasses.dataclass
class Skip:
    """One skipped call: the module's path, its call number, and the output to use in its
    place (a node id, or a constant when ``node`` is None)."""

    path: str
    call: int
    node: int | None
    constant: Any
    source: tuple[str, int]


class Skipper:
    """Shadows the ``forward`` of every module with a skipped call, for one run."""

    def __init__(
        self, skips: list[Skip], modules: dict[str, torch.nn.Module], graph: InterventionGraph
    ) -> None:
        self.graph = graph
        self.by_path: dict[str, dict[int, Skip]] = {}
        for skip in skips:
            self.by_path.setdefault(skip.path, {})[skip.call] = skip
        self.modules = {path: modules[path] for path in self.by_path}
        self._saved: list[tuple[torch.nn.Module, Any]] = []

    def __enter__(self) -> Skipper:
        try:
            for path, module in self.modules.items():
                self._saved.append((module, module.__dict__.get("forward", _MISSING)))
                module.forward = self._wrapper(path, module.forward)  # type: ignore[method-assign]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for module, forward in reversed(self._saved):
            if forward is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = forward  # type: ignore[method-assign]
        self._saved.clear()

    def _wrapper(self, path: str, forward: Any) -> Any:
        skips = self.by_path[path]
        core = self.graph._core
        calls = [0]

        def skipping_forward(*args: Any, **kwargs: Any) -> Any:
            call = calls[0]
            calls[0] = call + 1
            skip = skips.get(call)
            if skip is None:
                return forward(*args, **kwargs)
            if skip.node is None:
                return skip.constant
            if not core.done(skip.node):
                raise ExecutionError(
                    f"{spell_path(path)}.skip(...) (traced at {format_source(skip.source)}): "
                    "its value was not computed when the module was called; it must come "
                    "from modules that run before this one",
                    self.graph._node(skip.node).name,
                )
            return core.value(skip.node)

        return skipping_forward
