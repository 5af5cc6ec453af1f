"""Finding the user's source line that made a node (for error messages)."""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

import torch

_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
#: Frames in these directories are library internals, never "the user's line". Layers built on
#: tracing add their own directories with :func:`skip_directory`.
_LIBRARY_DIRS: tuple[str, ...] = (_TRACING_DIR, _TORCH_DIR)


def skip_directory(path: str) -> None:
    """Treats frames from files under ``path`` as library internals."""
    global _LIBRARY_DIRS
    path = os.path.abspath(path) + os.sep
    if path not in _LIBRARY_DIRS:
        _LIBRARY_DIRS = (*_LIBRARY_DIRS, path)
        _IS_LIBRARY_FILE.clear()


#: File name -> whether it lies in a library directory, so each file is tested once.
_IS_LIBRARY_FILE: dict[str, bool] = {}


#: ``(file, line)`` of a node whose origin is unknown.
UNKNOWN = ("<unknown>", 0)


#: ``id(code)`` -> ``(code, {instruction offset: (file, line)})``. ``frame.f_lineno`` scans the
#: code's line table from its start, which cost more than the rest of ``Graph.add`` in a long
#: function, so each call site is looked up once. The code object is kept so its id stays its
#: own; the table is emptied when it holds more than ``_MAX_CODES`` of them.
_CALL_SITES: dict[int, tuple[CodeType, dict[int, tuple[str, int]]]] = {}
_MAX_CODES = 4096


def user_source(skip: int = 1) -> tuple[str, int]:
    """``(file, line)`` of the innermost frame outside library internals, ``skip`` frames up."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        code = frame.f_code
        file = code.co_filename
        internal = _IS_LIBRARY_FILE.get(file)
        if internal is None:
            internal = _IS_LIBRARY_FILE[file] = file.startswith(_LIBRARY_DIRS)
        if not internal:
            entry = _CALL_SITES.get(id(code))
            if entry is None or entry[0] is not code:
                if len(_CALL_SITES) >= _MAX_CODES:
                    _CALL_SITES.clear()
                entry = _CALL_SITES[id(code)] = (code, {})
            sites = entry[1]
            offset = frame.f_lasti
            source = sites.get(offset)
            if source is None:
                source = sites[offset] = (file, frame.f_lineno)
            return source
        frame = frame.f_back
    return UNKNOWN


def format_source(source: tuple[str, int]) -> str:
    return f"{source[0]}:{source[1]}"
