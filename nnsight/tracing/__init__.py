"""Tracing: record operations on proxies into an intervention graph, then run it.

The documented ``nnsight.tracing`` API of nnsight 0.2: :class:`Graph`, :class:`Node`,
:class:`Proxy` and :func:`proxy_wrapper`, with the same module paths
(``nnsight.tracing.Graph.Graph`` and so on).
"""

from .Graph import Graph, NodeMap
from .Node import Node
from .Proxy import Proxy, proxy_call, proxy_wrapper

__all__ = ["Graph", "Node", "NodeMap", "Proxy", "proxy_call", "proxy_wrapper"]
