"""Model wrappers built on :mod:`nnsight.intervention`, and a small demo model."""

import os

from ..tracing._source import skip_directory
from .NNsight import NNsight

skip_directory(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["NNsight"]
