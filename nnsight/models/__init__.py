"""Model wrappers built on :mod:`nnsight.intervention` (``NNsight`` for any module,
``LanguageModel`` for Hugging Face language models), and a small demo model."""

import os

from ..tracing._source import skip_directory
from .LanguageModel import LanguageModel
from .NNsight import NNsight

skip_directory(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["LanguageModel", "NNsight"]
