"""Finding the user's source line that made a node (for error messages)."""

from __future__ import annotations

import os
import sys

import torch

_NNSIGHT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_LIBRARY_DIRS = (_NNSIGHT_DIR, _TORCH_DIR)

#: ``(file, line)`` of a node whose origin is unknown.
UNKNOWN = ("<unknown>", 0)


def user_source(skip: int = 1) -> tuple[str, int]:
    """``(file, line)`` of the innermost frame outside nnsight and torch, ``skip`` frames up."""
    frame = sys._getframe(skip)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame = frame.f_back
    if frame is None:
        return UNKNOWN
    return frame.f_code.co_filename, frame.f_lineno


def format_source(source: tuple[str, int]) -> str:
    return f"{source[0]}:{source[1]}"
