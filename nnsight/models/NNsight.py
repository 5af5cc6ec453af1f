"""NNsight: wraps any ``torch.nn.Module`` for tracing and editing it while it runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..intervention.batching import batch_size_of, combine
from ..intervention.editing import EditBlock
from ..intervention.envoy import Envoy, Session
from ..intervention.proxy import InterventionProxy
from ..intervention.scan import Scanner
from ..intervention.session import TraceSession
from ..intervention.tracer import Tracer

#: ``torch.nn.Module`` methods that return the module itself: on the wrapper they return the
#: wrapper (``model = model.to("cuda")`` keeps a model that can trace, as in nnsight 0.2).
_RETURNS_SELF = ("to", "cpu", "cuda", "eval", "train", "half", "float", "double", "bfloat16")


#: Options of remote execution (0.2's ``remote=True`` and its companions): taken out of a
#: trace's keyword arguments, never passed to the model.
_REMOTE_OPTIONS = ("remote", "blocking", "remote_include_output", "remote_timeout", "backend")


def _take_remote_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Removes the remote-execution options from ``kwargs`` and returns what the tracer
    needs of them (see ``nnsight.remote``)."""
    options = {name: kwargs.pop(name) for name in _REMOTE_OPTIONS if name in kwargs}
    if options.get("backend") is not None:
        raise NotImplementedError(
            f"backend={options['backend']!r}: nnsight runs traces locally or, with "
            "remote=True, on a worker started by nnsight.remote.serve(...)"
        )
    if options.get("blocking", True) is not True:
        raise NotImplementedError("blocking=False: remote traces wait for their results")
    if "invoker_args" in kwargs:
        raise TypeError(
            "invoker_args= was nnsight 0.2's way to pass keyword arguments to the implicit "
            "invoke: pass them to model.trace(...) itself, or open tracer.invoke(...) blocks"
        )
    remote = options.get("remote") or None
    if remote is not None and not isinstance(remote, (bool, str)):
        raise TypeError(f"remote= is True or a worker's name, not {type(remote).__name__}")
    return {
        "remote": remote,
        "remote_timeout": options.get("remote_timeout"),
        "remote_include_output": bool(options.get("remote_include_output", False)),
    }


def _holds_text(inputs: Any) -> bool:
    """Whether a string sits among ``inputs`` (top level, or in lists and tuples)."""
    if isinstance(inputs, str):
        return True
    if isinstance(inputs, dict):
        return any(_holds_text(value) for value in inputs.values())
    return isinstance(inputs, (list, tuple)) and any(_holds_text(item) for item in inputs)


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

    Subclasses (:class:`~nnsight.models.LanguageModel.LanguageModel`) change how inputs become
    the model's arguments (``_prepare_inputs``, ``_batch_inputs``, ``_scan_inputs``), how the
    model runs (``_execute``) and when its weights load (``_ensure_dispatched``).

    Attributes:
        proxy_class: The proxy type of this model's traces.
    """

    proxy_class: type[InterventionProxy] = InterventionProxy

    def __init__(self, model: torch.nn.Module) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_session", Session())
        object.__setattr__(self, "_envoy", Envoy(model, "", self._session))
        object.__setattr__(self, "_scanner", Scanner(model))
        #: Graphs of ``model.edit()`` blocks, replayed in every invoke of later traces.
        object.__setattr__(self, "_edits", [])
        self._index_modules()

    def _index_modules(self) -> None:
        # From the envoy tree, so a module in two containers is found at both paths.
        paths = {envoy.path: envoy._module for envoy in self._envoy.modules()}
        object.__setattr__(self, "_modules_by_path", paths)

    def trace(
        self,
        *inputs: Any,
        trace: bool = True,
        validate: bool = False,
        scan: bool = True,
        stop_early: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Opens a trace (see :class:`~nnsight.intervention.tracer.Tracer`); with
        ``trace=False`` just runs the model on the inputs and returns its output.
        ``stop_early=True`` ends the forward pass after the last module the graph needs."""
        remote = _take_remote_options(kwargs)
        if not trace:
            args, forward_kwargs, _ = self._prepare_inputs(inputs, kwargs)
            self._ensure_dispatched()
            return self._execute(args, forward_kwargs, None)
        return Tracer(
            self, inputs, kwargs, validate=validate, scan=scan, stop_early=stop_early, **remote
        )

    def edit(self, inplace: bool = False) -> EditBlock:
        """``with model.edit() as (tracer, edited):`` — interventions written on ``edited``
        in the block apply to every later trace of ``edited`` (in each of its invokes, before
        the trace's own code), and ``model`` stays as it was: ``edited`` wraps the same
        module. ``inplace=True`` edits ``model`` itself (``edited`` is ``model``). An edit
        cannot save values, read gradients or stop. Modern nnsight's ``edit``."""
        return EditBlock(self, inplace)

    def clear_edits(self) -> None:
        """Removes every edit of this model (``model.edit(inplace=True)``)."""
        self._edits.clear()

    def _edited_copy(self) -> NNsight:
        """A second wrapper of the same module with this one's edits, for ``edit()``."""
        copy = NNsight(self._model)
        copy._edits.extend(self._edits)
        return copy

    def session(self, progress: bool = False) -> TraceSession:
        """``with model.session():`` — several traces in one block, run one after another
        when it ends; a proxy of an earlier trace can be used in a later one without
        ``.save()`` (modern nnsight's ``session``; see ``nnsight.intervention.session``).
        ``progress=True`` shows a tqdm bar over the traces as they run."""
        return TraceSession(self, progress)

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
        proxy values. ``progress=True`` shows a tqdm bar over the steps.
        """
        remote = _take_remote_options(kwargs)
        progress = bool(kwargs.pop("progress", False))
        if not callable(getattr(self._model, "generate", None)):
            raise TypeError(
                f"{type(self._model).__name__} has no generate() method; use model.trace(...)"
            )
        return Tracer(
            self, inputs, {}, validate=validate, scan=scan, generate=kwargs, progress=progress,
            **remote,
        )  # fmt: skip

    # ----- how inputs reach the model (overridden by LanguageModel) ---------------------------

    def _prepare_inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], int]:
        """One invoke's inputs as the model's positional and keyword arguments, and the number
        of batch rows they make. Here: as given; rows from the first tensor's first dimension."""
        return args, kwargs, batch_size_of((args, kwargs))

    def _batch_inputs(
        self, invokes: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The prepared inputs of every invoke as one batch (see ``batching.combine``)."""
        return combine(invokes)  # type: ignore[no-any-return]

    def _invoker_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """What ``invoker.inputs`` shows of an invoke's prepared inputs (here: the args)."""
        return args

    def _scan_inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """What the scan runs one invoke's prepared inputs as (here: as they are)."""
        return args, kwargs

    def _ensure_dispatched(self) -> None:
        """Makes sure the wrapped model has its real weights before it runs (they always do
        here; a LanguageModel loads them on its first run)."""

    def _execute(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], generate: dict[str, Any] | None
    ) -> Any:
        """Runs the wrapped model on batched inputs: one forward pass, or ``generate`` with
        the ``generate`` keyword arguments when they are given."""
        try:
            if generate is None:
                return self._model(*args, **kwargs)
            return self._model.generate(*args, **kwargs, **generate)
        except Exception as exc:
            if _holds_text((args, kwargs)):
                exc.add_note(
                    "(the input is text, and NNsight passes inputs to the module as they are: "
                    "use LanguageModel(...) for a Hugging Face language model, which "
                    "tokenizes, or pass token ids)"
                )
            raise

    def _replace_model(self, model: torch.nn.Module, keep: Iterable[Envoy] = ()) -> None:
        """Wraps ``model`` (same architecture, say with real weights) instead: every envoy,
        also one a user holds, now stands for the module at its path in ``model``; envoys in
        ``keep`` (not part of the model) are left as they are. Scans are forgotten."""
        kept = set(map(id, keep))
        for envoy in self._envoy.modules():
            if id(envoy) not in kept:
                envoy._module = model.get_submodule(envoy.path[1:]) if envoy.path else model
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_scanner", Scanner(model))
        self._index_modules()

    # ----- the wrapped module -----------------------------------------------------------------

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
        if name in _RETURNS_SELF:

            def returning_the_wrapper(*args: Any, **kwargs: Any) -> NNsight:
                if name not in ("eval", "train"):  # moving meta weights: load them first
                    self._ensure_dispatched()
                getattr(self._model, name)(*args, **kwargs)
                # Scans kept dtypes and devices: forget them.
                object.__setattr__(self, "_scanner", Scanner(self._model))
                return self

            returning_the_wrapper.__doc__ = getattr(torch.nn.Module, name).__doc__
            return returning_the_wrapper
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
        # The wrapper's own attributes (private ones, properties, those its class declares);
        # anything else is the module's, as reads are.
        if key.startswith("_") or hasattr(type(self), key):
            object.__setattr__(self, key, value)
        else:
            setattr(self._envoy, key, value)

    def __repr__(self) -> str:
        """The module tree, as ``print(module)`` shows it (nnsight 0.2 printed the same)."""
        return repr(self._envoy)
