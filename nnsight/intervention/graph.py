"""The graph of one model trace: a tracing ``Graph`` that also knows what to keep after it."""

from __future__ import annotations

import inspect

import torch

from ..tracing import Graph
from .proxy import InterventionProxy

_EMPTY = inspect._empty


class InterventionGraph(Graph):
    """A :class:`~nnsight.tracing.Graph` with the trace's saved proxies and grad nodes.

    Attributes:
        saved: Proxies ``.save()`` was called on, turned into ``SavedProxy`` after the run.
    """

    def __init__(self, module: torch.nn.Module, validate: bool = False) -> None:
        super().__init__(module, proxy_class=InterventionProxy, validate=validate)
        self.saved: list[InterventionProxy] = []
        self._grads: dict[int, InterventionProxy] = {}

    def grad_of(self, proxy: InterventionProxy) -> InterventionProxy:
        """The proxy of ``proxy``'s gradient: one ``grad`` node per node, made on first use."""
        node = proxy.node
        grad = self._grads.get(node.id)
        if grad is None:
            grad = self.add(  # type: ignore[assignment]  # the graph's proxy class
                target="grad", value=node._proxy_value, args=[node]
            )
            assert grad is not None
            self._grads[node.id] = grad
        return grad

    @property
    def has_grads(self) -> bool:
        return bool(self._grads)
