"""Finding the user's source line that made a node (for error messages)."""

from __future__ import annotations

import os

import torch

from .._core import SourceFinder

_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep

#: ``(file, line)`` of a node whose origin is unknown.
UNKNOWN = ("<unknown>", 0)

#: The frame walk, in the core: decides once per code object whether it is library code and
#: looks up each call site's line once (``frame.f_lineno`` scans the code's line table from its
#: start, which in a long function cost more than the rest of ``Graph.add``). Frames in its
#: directories are library internals, never "the user's line"; layers built on tracing add
#: their own with :func:`skip_directory`. The core's own hot paths (``GraphCore.add_argument``,
#: ``add_save``) are handed it.
SOURCE_FINDER = SourceFinder([_TRACING_DIR, _TORCH_DIR], UNKNOWN)

#: ``user_source(skip=1) -> (file, line)``: the innermost frame outside library internals,
#: searched from the frame of the function calling it, ``skip - 1`` frames further up
#: (``user_source(2)`` in ``Graph.add`` starts at ``add``'s caller); :data:`UNKNOWN` when every
#: frame is library code.
user_source = SOURCE_FINDER.find


def skip_directory(path: str) -> None:
    """Treats frames from files under ``path`` as library internals."""
    SOURCE_FINDER.add_library_dir(os.path.abspath(path) + os.sep)


def format_source(source: tuple[str, int]) -> str:
    return f"{source[0]}:{source[1]}"
