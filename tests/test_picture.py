"""graph.vis: the DOT source names every node, its target and the user's line; rendering
where graphviz's `dot` exists, a clear error where it does not."""

from __future__ import annotations

import inspect
import os
import shutil

import pytest
import torch
from model_helpers import mlp

from nnsight import NNsight, NNsightError

graphviz = pytest.importorskip("graphviz")


def traced_graph() -> tuple[object, int]:
    model = NNsight(mlp())
    with model.trace(torch.randn(2, 8)) as tracer:
        hidden = model[0].output
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]  # the next one
        model[1].output = hidden * 2
        model.output.save()
    return tracer.graph, line


def test_the_dot_source_has_every_node_edge_and_line(tmp_path: os.PathLike[str]) -> None:
    graph, line = traced_graph()
    from nnsight.tracing.picture import digraph

    source = digraph(graph).source
    for node in graph.nodes.values():
        assert f"\t{node.name} [label=" in source
        for dependency in node.dependencies:
            assert f"\t{dependency.name} -> {node.name}\n" in source
    assert f"test_picture.py:{line}" in source  # the swap's line
    assert 'swap_0 [label="swap_0\nswap' in source and "shape=diamond" in source
    assert "argument .1.output.0" in source  # what the argument node stands for


def test_vis_writes_the_dot_file_and_renders_or_says_why_not(tmp_path: os.PathLike[str]) -> None:
    graph, _ = traced_graph()
    filename = os.path.join(tmp_path, "graph")
    if shutil.which("dot"):
        picture = graph.vis(filename=filename, format="png")
        assert isinstance(picture, graphviz.Digraph)
        with open(filename + ".png", "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(NNsightError, match=r"`dot` program is not installed.*DOT source was"):
            graph.vis(filename=filename, format="png")
    with open(filename) as file:
        dot = file.read()
    assert dot.startswith('digraph "graph" {') and "swap_0 [label=" in dot
