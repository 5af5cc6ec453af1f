"""Remote execution: a trace's graph runs on a model held by a worker elsewhere.

``nnsight.remote.serve(model_key_or_module, name=..., **model_kwargs)`` starts a worker (a Ray
actor, in the current cluster or a new local one); ``model.trace(..., remote=True)`` (nnsight
0.2's spelling) or ``remote="name"`` then sends the graph and the inputs, as a message of the
graph wire format (``nnsight.serialization``), and the saved values come back into the local
proxies: the code is the same as for a local trace, and so are the results. Needs the
``remote`` extra (Ray, msgspec, safetensors).
"""

from __future__ import annotations

from .actor import connect, serve, stop
from .client import DEFAULT_TIMEOUT_S

__all__ = ["DEFAULT_TIMEOUT_S", "connect", "serve", "stop"]
