"""The user's line a node records: the innermost frame outside library directories."""

from __future__ import annotations

import importlib.util
import inspect
import operator
import os
from pathlib import Path

from nnsight import Graph
from nnsight.tracing import _source

EMPTY = inspect._empty


def _line_of(marker: str) -> int:
    """The line of this file holding ``marker``, found independently of the finder."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.endswith(marker))


def test_each_call_site_records_its_own_line_also_when_repeated() -> None:
    graph = Graph(None, validate=False)
    x = graph.add("argument", 0, ["x"])
    seen = []
    for _ in range(3):  # the same call sites again: answered from the cache
        first = graph.add(operator.add, EMPTY, [x, 1])  # site A
        second = graph.add(operator.mul, EMPTY, [x, 2])  # site B
        seen.append((first.node.source, second.node.source))
    expected = ((__file__, _line_of("# site A")), (__file__, _line_of("# site B")))
    assert seen == [expected] * 3


def test_frames_in_a_library_directory_are_skipped(tmp_path: Path) -> None:
    helper = tmp_path / "helper_lib.py"
    helper.write_text("def locate(finder):\n    return finder.find()\n")
    spec = importlib.util.spec_from_file_location("helper_lib", helper)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    finder = _source.SourceFinder([], _source.UNKNOWN)
    assert module.locate(finder) == (str(helper), 2)  # not a library: the helper's own line
    finder.add_library_dir(str(tmp_path) + os.sep)  # forgets what it decided before
    where = module.locate(finder)  # site C
    assert where == (__file__, _line_of("# site C"))


def test_graph_add_names_the_line_outside_nnsight_and_only_library_frames_give_unknown() -> None:
    graph = Graph(None, validate=False)
    x = graph.add("argument", 0, ["x"])
    proxy = x + 1  # Proxy.__add__ and Graph.add are library frames: # site D
    assert proxy.node.source == (__file__, _line_of("# site D"))
    everything = _source.SourceFinder([os.sep, "<"], _source.UNKNOWN)  # files, frozen modules
    assert everything.find() == _source.UNKNOWN
