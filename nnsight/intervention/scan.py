"""The model scan: what every module call gives and takes, learned from one fake forward pass.

Envoy proxies (``.output``/``.input``) get their proxy values from the scan, so ``.shape``,
``len()`` and tuple unpacking work while tracing. The scan is lazy and cached:

* lazy: a proxy value is a :class:`ScannedValue` that runs the scan only when something reads
  it. A trace that never asks for a shape runs no fake forward at all.
* cached: the scan's results are kept, as metadata only (shape, strides, dtype, device), per
  model and per signature of the inputs (shapes, dtypes, non-tensor values). Later traces with
  inputs of the same signature pay a dictionary lookup.

The fake forward runs under a ``FakeTensorMode`` (real weights are fakified, never touched).
When fake tensors cannot run the model (data-dependent control flow), the values stay unknown.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from ..tracing import Proxy
from ..tracing.fake_cache import LazyValue
from ..tracing.validation import FakeRunner
from .batching import map_tensors, rebuild_like

_EMPTY = inspect._empty

#: Signatures kept per model before the cache starts over.
MAX_SCANS = 64

#: ``"<path>.<output|input>.<call index>"`` (the argument key of the envoy's node) -> the value's
#: metadata structure.
CallValues = dict[str, Any]


class _Meta:
    """A tensor's metadata, standing for it inside a kept structure."""

    __slots__ = ("device", "dtype", "requires_grad", "shape", "stride")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.shape = tuple(tensor.shape)
        self.stride = tensor.stride()
        self.dtype = tensor.dtype
        self.device = tensor.device
        self.requires_grad = tensor.requires_grad

    def build(self, mode: FakeTensorMode) -> FakeTensor:
        meta = torch.empty_strided(
            self.shape, self.stride, dtype=self.dtype, device="meta"
        ).requires_grad_(self.requires_grad)
        return FakeTensor(mode, meta, self.device)


class _Container:
    """A tuple, list or dict (of any subclass) inside a kept structure."""

    __slots__ = ("items", "like")

    def __init__(self, like: Any, items: Any) -> None:
        self.like = like  # the original, for its type (model outputs are rebuilt by type)
        self.items = items


def _snapshot(obj: Any) -> Any:
    """What the scan keeps of a value: tensors as metadata, containers as their items."""
    if isinstance(obj, torch.Tensor):
        return _Meta(obj)
    if isinstance(obj, (tuple, list)):
        return _Container(type(obj), [_snapshot(item) for item in obj])
    if isinstance(obj, dict):
        return _Container(type(obj), {key: _snapshot(item) for key, item in obj.items()})
    return obj


#: Values a signature holds as themselves: immutable, and never holding a tensor alive.
_PLAIN = (int, float, bool, complex, str, bytes, type(None), torch.dtype, torch.device)


class _Unsigned(Exception):
    pass


def signature(value: Any) -> Any:
    """A hashable summary of inputs for the cache: tensors by shape, dtype and device, plain
    values (numbers, strings, dtypes...) as themselves. None when anything else appears (a KV
    cache object, say): such inputs are not cached, so the cache never holds an object alive."""

    def summarize(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return ("tensor", tuple(obj.shape), obj.dtype, obj.device)
        if isinstance(obj, (tuple, list)):
            return (type(obj), tuple(summarize(item) for item in obj))
        if isinstance(obj, dict):
            return (type(obj), tuple((key, summarize(item)) for key, item in obj.items()))
        if type(obj) in _PLAIN:
            return obj
        raise _Unsigned

    try:
        return summarize(value)
    except _Unsigned:
        return None


class Scanner:
    """Scans one model and caches the results by input signature."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._cache: dict[Any, CallValues | None] = {}
        self.runs = 0  # fake forwards actually run (for tests)
        #: Why the last scan that failed could not run the model.
        self.failure: str | None = None

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallValues | None:
        """Every module call's kept input and output for these inputs (None: not scannable)."""
        key = signature((args, kwargs))
        if key is not None and key in self._cache:
            return self._cache[key]
        found = self._run(args, kwargs)
        if key is not None:
            if len(self._cache) >= MAX_SCANS:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallValues | None:
        self.runs += 1
        try:
            return self._attempt(args, kwargs)
        except Exception as first:  # kept as text: the exception's frames hold the model
            failure = f"{type(first).__name__}: {first}"
        # Models that branch on data (transformers 4.x asks `attention_mask.all()` to skip
        # building a causal mask) take their data-independent path when they believe they
        # are being compiled, the path torch.export needs: the same shapes, no data.
        compiling = getattr(torch.compiler, "_compile_session_context", None)  # torch >= 2.4
        if compiling is not None:
            try:
                with compiling():
                    return self._attempt(args, kwargs)
            except Exception:
                pass
        self.failure = failure
        return None  # fake tensors cannot run this model: values stay unknown

    def _attempt(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallValues:
        found: CallValues = {}
        calls: dict[str, list[int]] = {}
        handles = []

        def keep(path: str, kind: str, value: Any) -> None:
            counter = calls.setdefault(path, [0, 0])
            slot = 0 if kind == "input" else 1
            found[f"{path}.{kind}.{counter[slot]}"] = _snapshot(value)
            counter[slot] += 1

        # Every path, as envoys have them: a module in two containers is kept at both.
        for name, module in self._model.named_modules(remove_duplicate=False):
            path = f".{name}" if name else ""
            handles.append(module.register_forward_pre_hook(_pre(keep, path), with_kwargs=True))
            handles.append(module.register_forward_hook(_post(keep, path)))
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        paused = _pause_offloading(self._model)
        try:
            stand_ins = _stand_ins(self._model, mode, _execution_devices(self._model))

            def fake(tensor: torch.Tensor) -> torch.Tensor:
                # A saved proxy of an earlier trace passes for a tensor (SavedProxy): its value.
                return mode.from_tensor(tensor.value if isinstance(tensor, Proxy) else tensor)

            with mode:
                fake_args, fake_kwargs = map_tensors((args, kwargs), fake)
                if stand_ins is None:
                    self._model(*fake_args, **fake_kwargs)
                else:
                    torch.func.functional_call(self._model, stand_ins, fake_args, fake_kwargs)
        finally:
            for handle in handles:
                handle.remove()
            for hook in paused:
                hook.offload = True
        return found


#: Where the weights of a model built on ``meta`` are taken to be while it is scanned: where
#: ``from_pretrained`` puts them unless told otherwise.
STAND_IN_DEVICE = torch.device("cpu")


def _offload_hooks(module: torch.nn.Module) -> list[Any]:
    """accelerate's ``AlignDevicesHook``s on ``module`` (a dispatched model's), if any."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", [hook]) if hook is not None else []
    return [h for h in hooks if hasattr(h, "offload") and hasattr(h, "execution_device")]


def _pause_offloading(model: torch.nn.Module) -> list[Any]:
    """Stops accelerate's hooks of an offloaded model from loading weights (from the CPU or
    the disk) while the scan runs: they would write real weights into the module under the
    fake mode. Inputs still move to each module's execution device. Returns the hooks to
    turn back on."""
    paused = []
    for module in model.modules():
        for hook in _offload_hooks(module):
            if hook.offload:
                hook.offload = False
                paused.append(hook)
    return paused


def _execution_devices(model: torch.nn.Module) -> dict[int, torch.device]:
    """``id(tensor)`` -> where accelerate runs the module holding it, for every parameter
    and buffer under a hook (deeper hooks win); an offloaded weight's stand-in goes there."""
    devices: dict[int, torch.device] = {}
    for module in model.modules():  # parents before children
        for hook in _offload_hooks(module):
            device = hook.execution_device
            if device is None:
                continue
            device = torch.device(device) if not isinstance(device, torch.device) else device
            for tensor in [*module.parameters(), *module.buffers()]:
                devices[id(tensor)] = device
    return devices


def _stand_ins(
    model: torch.nn.Module, mode: FakeTensorMode, devices: dict[int, torch.device]
) -> dict[str, torch.Tensor] | None:
    """For a model whose weights are not loaded (on ``meta``: before a LanguageModel's first
    run, or offloaded by accelerate), fake tensors for every parameter and buffer, to scan it
    with as if loaded (``meta`` itself runs few models: autocast, for one, refuses it): on
    ``devices`` where given, else :data:`STAND_IN_DEVICE`. None when nothing is on meta."""
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    if not any(tensor.is_meta for tensor in tensors.values()):
        return None
    built: dict[int, torch.Tensor] = {}  # tied weights stay tied
    for tensor in tensors.values():
        if id(tensor) not in built:
            meta = torch.empty_strided(
                tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta"
            ).requires_grad_(tensor.requires_grad)
            if tensor.is_meta:
                device = devices.get(id(tensor), STAND_IN_DEVICE)
                built[id(tensor)] = FakeTensor(mode, meta, device)
            else:
                built[id(tensor)] = mode.from_tensor(tensor)
    return {name: built[id(tensor)] for name, tensor in tensors.items()}


def _pre(keep: Callable[[str, str, Any], None], path: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        keep(path, "input", (args, kwargs))

    return hook


def _post(keep: Callable[[str, str, Any], None], path: str) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        keep(path, "output", output)

    return hook


class ScanContext:
    """What one invoke's scanned values are scanned with: the scanner, the invoke's inputs and
    the graph's fake runner, never the tracer or the graph, so proxy values form no reference
    cycle with them. The tracer releases it when the trace is over."""

    __slots__ = ("args", "kwargs", "runner", "scanner")

    def __init__(
        self, scanner: Scanner, args: tuple[Any, ...], kwargs: dict[str, Any], runner: FakeRunner
    ) -> None:
        self.scanner = scanner
        self.args: tuple[Any, ...] | None = args
        self.kwargs: dict[str, Any] | None = kwargs
        self.runner = runner

    def release(self) -> None:
        """Drops the hold on the invoke's inputs; values not read yet stay unknown
        (``inspect._empty``) from then on."""
        self.args = self.kwargs = None

    def values(self) -> CallValues | None:
        if self.args is None or self.kwargs is None:
            return None
        return self.scanner.values(self.args, self.kwargs)


class ScannedValue(LazyValue):
    """The proxy value of one module call's input or output, scanned on first read and built
    as fake tensors in the reading graph's fake mode (``inspect._empty`` when unknown).

    The tracer's hot path (``GraphCore.add_argument``) makes these without calling
    ``__init__``, filling the two slots directly.
    """

    __slots__ = ("_ctx", "_key")

    def __init__(self, ctx: ScanContext, key: str) -> None:
        self._ctx = ctx
        self._key = key  # the argument key, "<path>.<output|input>.<call>"

    def materialize(self) -> Any:
        found = self._ctx.values()
        if found is None or self._key not in found:
            return _EMPTY
        return _rebuild(found[self._key], self._ctx.runner.mode)


def _rebuild(kept: Any, mode: FakeTensorMode) -> Any:
    if isinstance(kept, _Meta):
        return kept.build(mode)
    if isinstance(kept, _Container):
        if isinstance(kept.items, dict):
            items: Any = {key: _rebuild(value, mode) for key, value in kept.items.items()}
        else:
            items = [_rebuild(value, mode) for value in kept.items]
        return rebuild_like(kept.like, items)
    return kept
