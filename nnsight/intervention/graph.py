"""The graph of one model trace: a tracing ``Graph`` that also knows what to keep after it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..tracing import Graph
from .proxy import InterventionProxy

if TYPE_CHECKING:
    from ..tracing.Node import Node
    from .session import TraceSession


class InterventionGraph(Graph):
    """A :class:`~nnsight.tracing.Graph` with the trace's saved proxies.

    Attributes:
        saved: Proxies ``.save()`` was called on, turned into ``SavedProxy`` after the run.
        session: The ``model.session()`` this graph's trace belongs to, or None.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        validate: bool = False,
        proxy_class: type[InterventionProxy] = InterventionProxy,
    ) -> None:
        super().__init__(module, proxy_class=proxy_class, validate=validate)
        self.saved: list[InterventionProxy] = []
        self._session_block: TraceSession | None = None

    def link_foreign(self, node: Node, used_at: tuple[str, int]) -> Any:
        """A node of this graph standing for ``node`` of another graph, when that is a graph
        of an earlier trace of this graph's session (see ``session``); else None."""
        if self._session_block is None:
            return None
        from .session import link_earlier

        return link_earlier(node, self, used_at)
