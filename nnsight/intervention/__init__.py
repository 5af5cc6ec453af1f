"""Running intervention graphs inside real models: envoys, traces, invokes, interleaving.

Built on :mod:`nnsight.tracing`; :mod:`nnsight.models` wraps models with it.
"""

import os

from ..tracing._describe import ARGUMENT_SPELLERS
from ..tracing._source import skip_directory
from .envoy import Envoy, spell_argument_key
from .graph import InterventionGraph
from .proxy import InterventionProxy, SavedProxy
from .tracer import Invoker, Tracer

skip_directory(os.path.dirname(os.path.abspath(__file__)))
ARGUMENT_SPELLERS.append(spell_argument_key)  # messages name module values as users write them

__all__ = [
    "Envoy",
    "InterventionGraph",
    "InterventionProxy",
    "Invoker",
    "SavedProxy",
    "Tracer",
]
