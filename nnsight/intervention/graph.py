"""The graph of one model trace: a tracing ``Graph`` that also knows what to keep after it."""

from __future__ import annotations

import torch

from ..tracing import Graph
from .proxy import InterventionProxy


class InterventionGraph(Graph):
    """A :class:`~nnsight.tracing.Graph` with the trace's saved proxies.

    Attributes:
        saved: Proxies ``.save()`` was called on, turned into ``SavedProxy`` after the run.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        validate: bool = False,
        proxy_class: type[InterventionProxy] = InterventionProxy,
    ) -> None:
        super().__init__(module, proxy_class=proxy_class, validate=validate)
        self.saved: list[InterventionProxy] = []
