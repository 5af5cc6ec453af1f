"""Finding the user's source line that made a node (for error messages)."""

from __future__ import annotations

import os

import torch

from .._core import SourceFinder

_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
#: Frames in these directories are library internals, never "the user's line". Layers built on
#: tracing add their own directories with :func:`skip_directory`.
_LIBRARY_DIRS: tuple[str, ...] = (_TRACING_DIR, _TORCH_DIR)


#: The frame walk, in the core: decides once per code object whether it is library code and
#: looks up each call site's line once (``frame.f_lineno`` scans the code's line table from its
#: start, which in a long function cost more than the rest of ``Graph.add``).
_FINDER = SourceFinder(list(_LIBRARY_DIRS))

#: ``user_source(skip=1) -> (file, line)``: the innermost frame outside library internals,
#: searched from the frame of the function calling it, ``skip - 1`` frames further up
#: (``user_source(2)`` in ``Graph.add`` starts at ``add``'s caller); :data:`UNKNOWN` when every
#: frame is library code.
user_source = _FINDER.find


def skip_directory(path: str) -> None:
    """Treats frames from files under ``path`` as library internals."""
    global _LIBRARY_DIRS
    path = os.path.abspath(path) + os.sep
    if path not in _LIBRARY_DIRS:
        _LIBRARY_DIRS = (*_LIBRARY_DIRS, path)
        _FINDER.add_library_dir(path)


#: ``(file, line)`` of a node whose origin is unknown.
UNKNOWN = ("<unknown>", 0)


def format_source(source: tuple[str, int]) -> str:
    return f"{source[0]}:{source[1]}"
