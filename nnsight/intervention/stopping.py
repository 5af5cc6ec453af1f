"""Stopping the model's run early: ``tracer.stop()`` and ``model.trace(..., stop_early=True)``.

A stop is a node of the graph that raises :class:`EarlyStop` when it runs; it depends on every
node traced before it (on the frontier: the nodes nothing else uses yet), so it runs the moment
all of them have, and the model's forward pass ends there. The trace catches the exception:
what was saved is kept, and the run's output is None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .graph import InterventionGraph


class EarlyStop(Exception):
    """Ends the model's run where a stop node ran (caught by the trace; never reaches users).
    The core lets an exception with ``nnsight_early_stop`` through without aborting the
    graph, so the values computed so far are kept."""

    nnsight_early_stop = True


def release_unsaved(graph: InterventionGraph) -> None:
    """After a stopped run: frees every value but the saved ones (a finished run would have
    freed them as their last user ran; a stopped one never reached those users)."""
    core = graph._core
    saved = {
        dep for id in range(len(core)) if core.kind(id) == "null" for dep in core.dependencies(id)
    }
    for id in range(len(core)):
        if id not in saved and core.done(id):
            core.destroy(id)


def stop_run(*_after: Any) -> None:
    """The target of a stop node: its arguments are the values it waits for."""
    raise EarlyStop


def frontier(graph: InterventionGraph) -> list[Any]:
    """The nodes a stop must wait for: those no node uses yet; for a save (a ``null`` node,
    which never runs), the value it saves."""
    core = graph._core
    waits: dict[int, None] = {}
    for id in range(len(core)):
        if core.listeners(id):
            continue
        if core.kind(id) == "null":
            waits.update(dict.fromkeys(core.dependencies(id)))
        else:
            waits[id] = None
    return [graph._node(id) for id in waits]
