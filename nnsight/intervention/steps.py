"""Generation steps as loops: ``for step in tracer.iter[0:3]:`` and ``for step in tracer.all():``
(modern nnsight's names).

In generation every step calls the modules again: step ``n`` is call ``n`` of each module. The
loop body runs once per step while tracing, with every envoy addressing that step's call, so
the reads and writes it traces are bound to that step; after the loop, envoys address the call
they did before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import TracingError
from ..tracing._source import format_source, user_source

if TYPE_CHECKING:
    from .tracer import Tracer


class StepIndexer:
    """``tracer.iter``: index it with a step, a slice of steps or a list of them."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def __getitem__(self, index: int | slice | list[int]) -> Iterator[int]:
        source = user_source()
        tracer = self._tracer
        check_generating(tracer, "tracer.iter", source)
        if isinstance(index, int):
            steps = [index]
        elif isinstance(index, slice):
            if index.stop is None or (index.start or 0) < 0 or index.stop < 0:
                steps = list(range(step_count(tracer, source)))[index]
            else:
                steps = list(range(index.stop))[index]
        elif isinstance(index, (list, tuple)) and all(isinstance(i, int) for i in index):
            steps = list(index)
        else:
            raise TracingError(
                f"tracer.iter[...] at {format_source(source)} takes a step, a slice of steps or "
                f"a list of them, not {type(index).__name__}"
            )
        if any(step < 0 for step in steps):
            raise TracingError(f"tracer.iter at {format_source(source)}: steps count from 0")
        return at_steps(tracer, steps)

    def __iter__(self) -> Iterator[int]:
        return self[:]


def check_generating(tracer: Tracer, what: str, source: tuple[str, int]) -> None:
    if not tracer.generating:
        raise TracingError(
            f"{what} at {format_source(source)} loops over generation steps, and this trace is "
            "one forward pass: use it inside model.generate(...) (a module called several "
            "times in one pass is addressed with .next())"
        )


def step_count(tracer: Tracer, source: tuple[str, int]) -> int:
    """How many steps the generation runs: its ``max_new_tokens``, else the model's
    generation config's."""
    count = (tracer._generate or {}).get("max_new_tokens")
    if count is None:
        config = getattr(tracer.model._model, "generation_config", None)
        count = getattr(config, "max_new_tokens", None)
    if not isinstance(count, int):
        raise TracingError(
            f"tracer.all() / tracer.iter[n:] at {format_source(source)}: the number of steps "
            "is not known; pass max_new_tokens= to generate, or give the steps (iter[0:3])"
        )
    return count


def at_steps(tracer: Tracer, steps: list[int]) -> Iterator[int]:
    """Yields each step with every envoy addressing that step's call; restores after."""
    reads = tracer._reads
    envoys: list[Any] = list(tracer.model._envoy.modules())
    before = [reads.call(envoy) for envoy in envoys]
    try:
        for step in steps:
            for envoy in envoys:
                reads.set_call(envoy, step)
            yield step
    finally:
        for envoy, call in zip(envoys, before, strict=True):
            reads.set_call(envoy, call)
