"""The README's code blocks run, in order, in one namespace, as a reader would run them.

Each block is compiled with the README as its file name and its own line numbers, so an error
names the README line. Printing is captured; every block must run without raising.
"""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line, code)`` of every ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        first = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first, match.group(1)))
    return blocks


def test_every_python_block_of_the_readme_runs() -> None:
    with open(README) as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "__readme__"}
    printed = io.StringIO()
    for first, code in blocks:
        compiled = compile("\n" * (first - 1) + code, README, "exec")
        with contextlib.redirect_stdout(printed):
            exec(compiled, namespace)
    output = printed.getvalue()
    assert "ExecutionError" in output and "README.md" in output  # the error block's line
    assert "True" in output  # isinstance(graph.nodes, dict), and more
