"""``tracer.cache(...)``: the outputs (and inputs) of many modules at once, read after the trace.

A cache is not part of the graph: for the run, each cached module gets one forward hook that
appends its value to a list, the cost of hooks writing into a dict. The hooks go on after the
graph's own, so they see values as the graph's edits left them. Read it after the block by
path (``cache["model.transformer.h.0"].output``) or by navigation
(``cache.transformer.h[0].output``). A module called once has its value as ``.output``; one
called several times (generation steps, a module reused in a forward) has the list of its
calls' values, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError
from ..tracing._source import format_source
from .batching import map_tensors
from .envoy import Envoy, spell_path
from .hooks import HookSet

if TYPE_CHECKING:
    from ..models.NNsight import NNsight


class Entry:
    """One module's cached values: ``output``; with ``include_inputs``, ``inputs``
    (``(args, kwargs)``) and ``input`` (the first positional argument). Each is a list, one
    value per call, when the module was called more than once."""

    __slots__ = ("_inputs", "_outputs")

    def __init__(self) -> None:
        self._outputs: list[Any] = []
        self._inputs: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @staticmethod
    def _one_or_all(values: list[Any]) -> Any:
        return values[0] if len(values) == 1 else list(values)

    @property
    def output(self) -> Any:
        return self._one_or_all(self._outputs)

    @property
    def inputs(self) -> Any:
        return self._one_or_all(self._inputs)

    @property
    def input(self) -> Any:
        firsts = [args[0] if args else None for args, _ in self._inputs]
        return self._one_or_all(firsts)

    def __len__(self) -> int:
        """The number of calls recorded."""
        return len(self._outputs)

    def __repr__(self) -> str:
        return f"<cache Entry: {len(self._outputs)} call(s)>"


class CacheView:
    """A module path inside a cache, walked like the model (``cache.transformer.h[0]``)."""

    __slots__ = ("_cache", "_path")

    def __init__(self, cache: Cache, path: str) -> None:
        self._cache = cache
        self._path = path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in ("output", "inputs", "input"):
            return getattr(self._cache["model" + self._path], name)
        return CacheView(self._cache, f"{self._path}.{name}")

    def __getitem__(self, index: int | str) -> CacheView:
        return CacheView(self._cache, f"{self._path}.{index}")

    def __repr__(self) -> str:
        return f"<cache view model{self._path}>"


class Cache:
    """What ``tracer.cache(...)`` returns: module values by path, filled by the run."""

    def __init__(
        self,
        paths: list[str],
        include_inputs: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        detach: bool,
    ) -> None:
        self._paths = paths  # envoy paths: "" for the root, ".transformer.h.0"
        self._entries = {"model" + path: Entry() for path in paths}
        self.include_inputs = include_inputs
        self._device = device
        self._dtype = dtype
        self._detach = detach

    # ----- reading ------------------------------------------------------------------------------

    def __getitem__(self, path: str | int) -> Any:
        """The entry of a path; an index walks into the root's children (``cache[2]``, as
        ``model[2]``)."""
        if isinstance(path, int):
            return CacheView(self, f".{path}")
        entry = self._entries.get(_key(path))
        if entry is None:
            raise KeyError(f"{path!r} is not cached (cached: {', '.join(self._entries)})")
        return entry

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in ("output", "inputs", "input"):  # the root module's
            return getattr(self._entries["model"], name)
        return CacheView(self, f".{name}")

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and _key(path) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> Iterable[str]:
        return self._entries.keys()

    def items(self) -> Iterable[tuple[str, Entry]]:
        return self._entries.items()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Cache of {len(self._entries)} module(s)>"

    # ----- filling (the run) ----------------------------------------------------------------

    def _converter(self) -> Any:
        """The function each recorded value goes through (tensors at any depth)."""
        detach, dtype = self._detach, self._dtype
        device = None if self._device is None else torch.device(self._device)

        def convert(tensor: torch.Tensor) -> torch.Tensor:
            if detach:
                tensor = tensor.detach()
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            return tensor if device is None or tensor.device == device else tensor.to(device)

        def convert_value(value: Any) -> Any:
            if type(value) is torch.Tensor:  # the usual case, without the walk
                return convert(value)
            return map_tensors(value, convert)

        return convert_value

    def hook(self, modules: dict[str, torch.nn.Module], hooks: HookSet) -> None:
        """Puts this cache's hooks on ``modules`` (by envoy path), into ``hooks``."""
        convert = self._converter()
        if not self.include_inputs:
            hooks.reserve(len(self._paths))
        for path in self._paths:
            entry = self._entries["model" + path]
            if self.include_inputs:
                hooks.forward_with_kwargs(modules[path], _recording_inputs(entry, convert))
            else:
                hooks.forward(modules[path], _recording(entry, convert))


def _recording(entry: Entry, convert: Any) -> Any:
    outputs = entry._outputs

    def hook(_: Any, __: Any, output: Any) -> None:
        outputs.append(convert(output))

    return hook


def _recording_inputs(entry: Entry, convert: Any) -> Any:
    outputs, inputs = entry._outputs, entry._inputs

    def hook(_: Any, args: Any, kwargs: Any, output: Any) -> None:
        inputs.append((convert(args), convert(kwargs)))
        outputs.append(convert(output))

    return hook


def _key(path: str) -> str:
    """A cache key, ``model.transformer.h.0``, from that, ``model.transformer.h[0]`` or
    ``transformer.h.0``."""
    path = re.sub(r"\[(\w+)\]", r".\1", path)
    if path == "model" or path.startswith("model."):
        return path
    return "model." + path.lstrip(".") if path else "model"


def module_paths(model: NNsight, modules: Any, source: tuple[str, int]) -> list[str]:
    """Envoy paths of ``modules`` (None: every module, the root included; else envoys or
    paths, ``"model.transformer.h.0"`` or ``"transformer.h.0"``); an unknown one is a
    ``TracingError`` at the user's line."""
    known = model._modules_by_path
    if modules is None:
        return list(known)
    if isinstance(modules, (Envoy, str)):
        modules = [modules]
    paths = []
    for module in modules:
        if isinstance(module, Envoy):
            path = module.path
        elif isinstance(module, str):
            path = _key(module)[len("model") :]
        else:
            raise TracingError(
                f"tracer.cache(modules=...) at {format_source(source)}: modules are envoys "
                f"(model.transformer.h[0]) or paths, not {type(module).__name__}"
            )
        if path not in known:
            raise TracingError(
                f"tracer.cache(modules=...) at {format_source(source)}: the model has no "
                f"module {module!r} ({spell_path(path)})"
            )
        paths.append(path)
    return paths
