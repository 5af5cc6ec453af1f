"""Decoder layers' outputs as transformers 4.x's tuples, which nnsight 0.2 code indexes.

transformers 4.x decoder layers (GPT-2's blocks, Llama's layers) returned a tuple whose first
item is the hidden states; 5.x returns the hidden states themselves. 0.2 code reads
``model.transformer.h[0].output[0]``, which on a tensor silently takes batch row 0. A
``LanguageModel`` (``layer_tuples=True``, the default) therefore shows each decoder layer's
output as a tuple whatever transformers returns: ``.output`` is ``(hidden_states,)`` when the
layer returns a tensor, the layer's own tuple when it returns one. ``[0]`` is the very tensor
the model goes on with, so in-place edits reach it; assigning ``.output`` a tuple (or a tensor)
replaces the layer's output in the form it really has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..intervention.envoy import Envoy
from ..intervention.proxy import InterventionProxy
from ..tracing.fake_cache import LazyValue, pure

if TYPE_CHECKING:
    from ..tracing import Node


@pure
def as_layer_tuple(output: Any) -> Any:
    """A decoder layer's output as a tuple: as it is when it is one, else ``(output,)``."""
    return output if isinstance(output, tuple) else (output,)


@pure
def like_layer_output(value: Any, original: Any) -> Any:
    """``value``, written against the tuple view, in the form of the layer's real output:
    a tuple stays a tuple where the layer returns one; where it returns a tensor, a tuple's
    first item (the hidden states) replaces it."""
    if isinstance(original, tuple) or not isinstance(value, (tuple, list)):
        return value
    return value[0]


class _TupleValue(LazyValue):
    """The proxy value of an ``as_layer_tuple`` node: the layer's scanned output, as a tuple."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    def materialize(self) -> Any:
        value = self._node.proxy_value
        return value if not isinstance(value, torch.Tensor) else (value,)


def is_decoder_layer(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a transformers decoder layer (the class transformers >= 4.52
    derives them from; before that, layers returned tuples anyway)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return False
    return isinstance(module, GradientCheckpointingLayer)


class LayerEnvoy(Envoy):
    """The envoy of a decoder layer: ``.output`` is its output as a tuple (see the module)."""

    def _get_output(self) -> InterventionProxy:
        proxy = Envoy.output.fget(self)  # type: ignore[attr-defined]
        tracer = self._session.tracer
        if tracer is None:  # pragma: no cover  (Envoy.output raised)
            return proxy  # type: ignore[no-any-return]
        view: Any = tracer.views.get(proxy._id)
        if view is None:
            view = tracer.graph.add(
                target=as_layer_tuple, value=_TupleValue(proxy.node), args=[proxy]
            )
            tracer.views[proxy._id] = view
        return view  # type: ignore[no-any-return]

    def _set_output(self, value: Any) -> None:
        tracer = self._tracer("output")
        current = tracer.module_value(self, "output")
        replacement = tracer.graph.add(target=like_layer_output, args=[value, current])
        first = value[0] if isinstance(value, (tuple, list)) and value else value
        tracer.set_module_value(self, "output", replacement, checked=first)

    output = property(_get_output, _set_output)  # type: ignore[assignment]
