"""Drawing an intervention graph with graphviz (``Graph.vis``; the ``vis`` extra).

One box per node, labelled with its name, its target and the user line that made it; an edge
from each node to every node that takes its value. Argument nodes (module values) are
ellipses, swaps (a module value replaced) diamonds, saves (``null``) double boxes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import NNsightError
from ._source import format_source
from .Node import target_name

if TYPE_CHECKING:
    from .Graph import Graph

_SHAPES = {"argument": "ellipse", "swap": "diamond", "null": "box3d", "grad": "octagon"}


def _graphviz() -> Any:
    try:
        import graphviz  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(
            "Graph.vis draws with graphviz: pip install '.[vis]' from a checkout of nnsight"
        ) from None
    return graphviz


def _label(node: Any) -> str:
    target = target_name(node.target)
    if target == "argument" and node.args:
        target = f"argument {node.args[0]}"  # the module value it stands for
    elif isinstance(node.target, str) and target not in _SHAPES:
        target = f".{target}()"  # a method of its first argument
    return f"{node.name}\n{target}\n{format_source(node.source)}"


def digraph(graph: Graph, title: str = "graph") -> Any:
    """``graph`` as a ``graphviz.Digraph`` (nothing rendered)."""
    graphviz = _graphviz()
    picture = graphviz.Digraph(name=title, graph_attr={"rankdir": "TB"})
    picture.attr("node", fontname="Helvetica", fontsize="10")
    nodes = graph._all_nodes()
    for node in nodes:
        shape = _SHAPES.get(node.target, "box") if isinstance(node.target, str) else "box"
        picture.node(node.name, _label(node), shape=shape)
    for node in nodes:
        for dependency in node.dependencies:
            picture.edge(dependency.name, node.name)
    return picture


def render(graph: Graph, filename: str, format: str) -> Any:
    """Writes ``graph``'s DOT source to ``filename`` and renders it to ``filename.format``;
    returns the ``graphviz.Digraph``. Without graphviz's ``dot`` program, raises an
    ``NNsightError`` that says the DOT file was still written."""
    graphviz = _graphviz()
    picture = digraph(graph, os.path.basename(filename))
    picture.save(filename)
    try:
        picture.render(filename, format=format)
    except graphviz.ExecutableNotFound:
        raise NNsightError(
            f"graphviz's `dot` program is not installed, so {filename}.{format} was not "
            f"drawn; the DOT source was written to {filename} (install graphviz, e.g. "
            "`apt install graphviz`, or render it elsewhere with `dot -T"
            f"{format} {filename}`)"
        ) from None
    return picture
