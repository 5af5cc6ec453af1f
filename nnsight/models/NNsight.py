"""NNsight: wraps any ``torch.nn.Module`` for tracing and editing it while it runs."""

from __future__ import annotations

from typing import Any

import torch

from ..intervention.envoy import Envoy, Session
from ..intervention.proxy import InterventionProxy
from ..intervention.scan import Scanner
from ..intervention.tracer import Tracer


class NNsight:
    """A model wrapped for interventions.

    ``model.<child>`` walks the module tree as envoys (``model.transformer.h[2]``); any other
    attribute is the wrapped module's (``model.config``). Outside a trace the model runs with
    no hooks at all.

    Example::

        model = NNsight(torch_module)
        with model.trace(x):
            hidden = model.layer1.output.save()
            model.layer2.output[:, 0] = 0
        hidden.value
    """

    def __init__(self, model: torch.nn.Module) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_session", Session())
        object.__setattr__(self, "_envoy", Envoy(model, "", self._session))
        object.__setattr__(self, "_scanner", Scanner(model))
        object.__setattr__(
            self,
            "_modules_by_path",
            # From the envoy tree, so a module in two containers is found at both paths.
            {envoy.path: envoy._module for envoy in self._envoy.modules()},
        )

    def trace(
        self,
        *inputs: Any,
        trace: bool = True,
        validate: bool = False,
        scan: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Opens a trace (see :class:`~nnsight.intervention.tracer.Tracer`); with
        ``trace=False`` just runs the model on the inputs and returns its output."""
        if not trace:
            return self._model(*inputs, **kwargs)
        return Tracer(self, inputs, kwargs, validate=validate, scan=scan)

    def generate(
        self,
        *inputs: Any,
        validate: bool = False,
        scan: bool = True,
        **kwargs: Any,
    ) -> Tracer:
        """Opens a trace whose run is the wrapped model's ``generate(inputs, **kwargs)`` (a
        Hugging Face model's, or any module's with that method) instead of one forward pass.

        Every generation step calls the modules again, so ``.output`` addresses the first step
        (the prompt's forward pass) and ``.next()`` each later one; ``tracer.next()`` moves
        every module on. ``kwargs`` all go to ``generate`` (``max_new_tokens=...``); with no
        ``inputs``, ``tracer.invoke(...)`` blocks give the prompts, batched into one call.
        ``tracer.output`` is what ``generate`` returned. Only the first step's values are
        scanned (later steps, with a KV cache, have other shapes): the rest have unknown
        proxy values.
        """
        if not callable(getattr(self._model, "generate", None)):
            raise TypeError(
                f"{type(self._model).__name__} has no generate() method; use model.trace(...)"
            )
        return Tracer(self, inputs, {}, validate=validate, scan=scan, generate=kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)

    @property
    def output(self) -> InterventionProxy:
        """Proxy of the whole model's output."""
        return self._envoy.output

    @output.setter
    def output(self, value: Any) -> None:
        self._envoy.output = value

    @property
    def input(self) -> InterventionProxy:
        """Proxy of the whole model's input, ``((args...), {kwargs})``."""
        return self._envoy.input

    @input.setter
    def input(self, value: Any) -> None:
        self._envoy.input = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._envoy, name)

    def __getitem__(self, key: int | str) -> Envoy:
        if type(key) is int:  # model[i], read once per layer per trace: one frame, not two
            try:
                return self._envoy._by_index[key]
            except IndexError:
                pass  # the envoy raises its own error
        return self._envoy[key]

    def __len__(self) -> int:
        return len(self._envoy)

    def __iter__(self) -> Any:
        return iter(self._envoy)

    def __setattr__(self, key: str, value: Any) -> None:
        if key in ("output", "input"):
            object.__setattr__(self, key, value)
        else:
            setattr(self._envoy, key, value)

    def __repr__(self) -> str:
        return f"NNsight({self._model!r})"
