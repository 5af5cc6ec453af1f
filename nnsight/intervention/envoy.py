"""Envoy: stands for one module of a wrapped model, mirroring the module tree.

``model.transformer.h[2]`` walks envoys; ``.output`` / ``.input`` inside a trace are proxies of
that module's output / input for the current invoke, and assigning them replaces the value
for the invoke's rows. Any other attribute is the real module's (``model.config``, weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError
from ..tracing._source import format_source, user_source

if TYPE_CHECKING:
    from .._core import ModuleReads
    from .proxy import InterventionProxy
    from .session import TraceSession
    from .tracer import Tracer


def spell_path(path: str) -> str:
    """How a user writes the envoy at ``path``: ``.transformer.h.0`` is
    ``model.transformer.h[0]``."""
    return "model" + "".join(
        f"[{part}]" if part.isdigit() else f".{part}" for part in path.split(".")[1:]
    )


def parse_argument_key(key: str) -> tuple[str, str, int] | None:
    """``(path, "input" | "output", call)`` of a module read's argument key
    (``".transformer.h.0.output.0"``), or None for a key that is not one."""
    parts = key.rsplit(".", 2)
    if len(parts) != 3:
        return None
    path, kind, call = parts
    if kind not in ("output", "input") or not call.isdigit() or (path and path[0] != "."):
        return None
    return path, kind, int(call)


def spell_argument_key(key: str) -> str | None:
    """How a user wrote the module value an argument key names: ``.transformer.h.0.output.0``
    is ``model.transformer.h[0].output``, a later call's with its call number (after
    ``.next()``); None for keys that are not module values."""
    parsed = parse_argument_key(key)
    if parsed is None:
        return None
    path, kind, call = parsed
    spelled = f"{spell_path(path)}.{kind}"
    return spelled if call == 0 else f"{spelled} (call {call}, after .next())"


class Session:
    """What all envoys of one wrapped model share: the trace open on it, if any, and that
    trace's module reads (the core's ``ModuleReads``, which hands out ``.output`` proxies)."""

    __slots__ = ("block", "reads", "tracer")

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.reads: ModuleReads | None = None
        #: The open ``model.session()``, if any.
        self.block: TraceSession | None = None


class ModuleCall:
    """Target of a module call traced through its envoy (``model.lm_head(hidden)`` inside a
    trace): calls the envoy's module as it is when the graph runs, so a call traced before a
    model's real weights were loaded (``LanguageModel``) calls the loaded module."""

    #: Modules may run on fake tensors when a value computed from the call is asked for.
    fake_safe = True

    __slots__ = ("envoy",)

    def __init__(self, envoy: Envoy) -> None:
        self.envoy = envoy

    @property
    def __name__(self) -> str:  # node names: `Linear_0`, as for the module itself
        return type(self.envoy._module).__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.envoy._module(*args, **kwargs)


class Envoy:
    """A module of the wrapped model, as seen while tracing.

    Attributes:
        path: ``""`` for the root, ``".transformer.h.0"`` for a submodule (nnsight 0.2's
            spelling, used in the graph's argument keys ``<path>.output.<call>``).
    """

    def __init__(self, module: torch.nn.Module, path: str, session: Session) -> None:
        self._module = module
        self.path = path
        self._session = session
        self._children = {
            name: Envoy(child, f"{path}.{name}", session) for name, child in module.named_children()
        }
        self._by_index = list(self._children.values())  # model.h[i] without listing names

    # ----- the module tree --------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        children = self.__dict__.get("_children")
        if children is None:  # during unpickling or before __init__
            raise AttributeError(name)
        if name in children:
            return children[name]
        try:
            return getattr(self._module, name)
        except AttributeError:
            raise AttributeError(
                f"{self._describe()} ({type(self._module).__name__}) has no submodule or "
                f"attribute '{name}'; its submodules are: {', '.join(children) or 'none'}"
            ) from None

    def __getitem__(self, key: int | str) -> Envoy:
        if isinstance(key, int):
            try:
                return self._by_index[key]
            except IndexError:
                raise IndexError(
                    f"{self._describe()} has {len(self._by_index)} submodules; index {key} is "
                    "out of range"
                ) from None
        if key in self._children:
            return self._children[key]
        raise KeyError(f"{self._describe()} has no submodule '{key}'")

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Envoy]:
        return iter(self._children.values())

    def modules(self) -> Iterator[Envoy]:
        """This envoy and every envoy below it, depth first."""
        yield self
        for child in self._children.values():
            yield from child.modules()

    def _describe(self) -> str:
        return spell_path(self.path)

    def __repr__(self) -> str:
        return repr(self._module)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Outside a trace, calls the module. Inside one, traces a call of it (it runs when its
        arguments exist, during the model's run); if the graph also reads this module's
        ``.output``, that extra call counts as one of its calls, as ``.next()`` sees them."""
        tracer = self._session.tracer
        if tracer is None:
            return self._module(*args, **kwargs)
        return tracer.apply(ModuleCall(self), *args, **kwargs)

    # ----- values of the current trace --------------------------------------------------------

    @property
    def output(self) -> InterventionProxy:
        """Proxy of this module's output at its current call, for the current invoke."""
        # One core call: read once per module per trace, it is the tracer's hot path.
        reads = self._session.reads
        proxy = None if reads is None else reads.read(self, "output")
        return self._read("output") if proxy is None else proxy

    @output.setter
    def output(self, value: Any) -> None:
        self._tracer("output").set_module_value(self, "output", value)

    @property
    def input(self) -> InterventionProxy:
        """Proxy of this module's input, ``((args...), {kwargs})`` as in nnsight 0.2."""
        reads = self._session.reads
        proxy = None if reads is None else reads.read(self, "input")
        return self._read("input") if proxy is None else proxy

    @input.setter
    def input(self, value: Any) -> None:
        self._tracer("input").set_module_value(self, "input", value)

    def _read(self, kind: str) -> InterventionProxy:
        """``kind``'s proxy by way of the tracer, which raises why there is none here (outside
        a trace, or outside an invoke)."""
        return self._tracer(kind).module_value(self, kind)

    def next(self, steps: int = 1) -> Envoy:
        """Addresses this module's next call from now on in this invoke (a module called
        several times per forward, or the next generation step); returns the envoy, so
        ``model.layer.next().output`` reads the second call's output. Each invoke starts at
        the first call again, as in nnsight 0.2."""
        self._tracer("next()").advance(self, steps)
        return self

    def skip(self, value: Any) -> None:
        """This module does not run at its current call, in this trace; ``value`` (a proxy
        computed from modules that run before it, or a constant) is its output, as later
        modules and ``.output`` see it (modern nnsight's ``envoy.skip``). The whole batch's
        call is skipped, so the trace must have one invoke."""
        self._tracer("skip()").skip(self, value)

    def _tracer(self, what: str) -> Tracer:
        tracer = self._session.tracer
        if tracer is None:
            raise TracingError(
                f"{self._describe()}.{what} used outside a trace at "
                f"{format_source(user_source())}: open `with model.trace(inputs):` first"
            )
        return tracer

    def __setattr__(self, key: str, value: Any) -> None:
        if key in ("output", "input") or key.startswith("_") or key == "path":
            object.__setattr__(self, key, value)
        elif key in self._children:
            raise TracingError(f"cannot replace submodule '{key}' of {self._describe()}")
        else:
            setattr(self._module, key, value)
