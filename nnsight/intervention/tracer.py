"""Tracer and Invoker: the ``with model.trace(...)`` block and its ``tracer.invoke(...)`` blocks.

Inside the block, envoy ``.output``/``.input`` proxies and every operation on them are recorded
into one :class:`~nnsight.intervention.graph.InterventionGraph`. On leaving the block the
invokes' inputs are batched into ONE forward pass, nodes that cannot affect a result are
eliminated, and the graph runs interleaved with the model (see ``interleaver``). Saved proxies
then behave like their values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from .._core import ModuleReads, set_classes
from ..errors import TracingError, ValidationError
from ..tracing._source import SOURCE_FINDER, format_source, user_source
from .batching import Rows
from .caching import Cache, module_paths
from .envoy import Envoy, parse_argument_key, spell_path
from .graph import InterventionGraph
from .hooks import HookSet
from .interleaver import Interleaver
from .progress import step_bar
from .proxy import InterventionProxy, SavedProxy
from .scan import ScanContext, ScannedValue
from .skipping import Skip, Skipper
from .steps import StepIndexer, at_steps, check_generating, step_count
from .stopping import EarlyStop, frontier, release_unsaved, stop_run

if TYPE_CHECKING:
    from ..models.NNsight import NNsight

_EMPTY = inspect._empty


@dataclasses.dataclass
class Invoke:
    """One invoke's inputs and the rows of the batch they fill."""

    index: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    start: int
    size: int
    #: What the invoke's envoy values are scanned with (None: scan off), released when the
    #: trace is over.
    scan: ScanContext | None = None


class Invoker:
    """``with tracer.invoke(*inputs, **kwargs):`` — interventions written inside see and change
    only this invoke's rows of the batch. Invokes cannot be nested.

    Attributes:
        inputs: The inputs as given; once the block is entered, as the model prepared them
            (nnsight 0.2's: a LanguageModel's are ``(BatchEncoding,)`` with ``input_ids``).
        kwargs: The keyword arguments as given.
    """

    def __init__(self, tracer: Tracer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.tracer = tracer
        self.inputs = args
        self.kwargs = kwargs
        self.invoke: Invoke | None = None

    def __enter__(self) -> Invoker:
        invoke = self.invoke = self.tracer._open_invoke(self.inputs, self.kwargs)
        self.inputs = self.tracer.model._invoker_inputs(invoke.args, invoke.kwargs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracer._close_invoke()

    def next(self, steps: int = 1) -> None:
        """Addresses every module's next call (the next generation step) from now on, in this
        invoke: nnsight 0.2's ``invoker.next()``, the same as ``tracer.next()`` here."""
        self.tracer.next(steps)


class Tracer:
    """``with model.trace(*inputs, validate=False, scan=True, **kwargs) as tracer:``.

    Args:
        model: The wrapped model.
        inputs, kwargs: Inputs of the implicit invoke when given; with none, open
            ``tracer.invoke(...)`` blocks instead (the kwargs are then passed to the forward
            call of the whole batch).
        generate: Keyword arguments of the model's ``generate`` method, which the run calls
            instead of the forward pass (``model.generate(...)``); None for a forward pass.
        validate: Run every traced op on fake tensors as it is added, so shape errors raise
            at the line that wrote them. Off by default: it costs ~15-25 µs per op, and a
            trace of cheap ops on real activations is then dominated by it.
        scan: Give envoy proxies proxy values from a fake forward pass, so ``.shape``,
            ``len()`` and unpacking work. On by default and cheap: the scan runs only when a
            value is read, and is cached per input signature (see ``scan``).
        remote: Run the graph on a remote worker instead (``nnsight.remote``): True for the
            worker serving the model's key, or the worker's name. ``remote_timeout``: seconds
            to wait for it; ``remote_include_output``: also bring back the model's output.
        stop_early: End the model's run once the graph has nothing left to do (after the
            last module it reads or writes), as if ``tracer.stop()`` ended the block; the
            output is then None. Ignored when the graph reads gradients.
        progress: Show a tqdm progress bar over the generation's steps (``generate``).

    Attributes:
        graph: The intervention graph being recorded.
        output: What the run returned (the model's output, or ``generate``'s), once the block
            is over; None until then.
    """

    def __init__(
        self,
        model: NNsight,
        inputs: tuple[Any, ...],
        kwargs: dict[str, Any],
        validate: bool = False,
        scan: bool = True,
        generate: dict[str, Any] | None = None,
        remote: str | bool | None = None,
        remote_timeout: float | None = None,
        remote_include_output: bool = False,
        stop_early: bool = False,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.stop_early = stop_early
        self.progress = progress
        self.graph = InterventionGraph(
            model._model, validate=validate, proxy_class=model.proxy_class
        )
        self.scan = scan
        self.output: Any = None
        self._generate = generate
        #: Where the graph runs: None here, else the remote worker's name or True (see
        #: ``nnsight.remote``).
        self.remote: str | bool | None = remote
        self.remote_timeout = remote_timeout
        self.remote_include_output = remote_include_output
        self._implicit = (inputs, kwargs) if inputs or kwargs else None
        self._forward_kwargs = {} if self._implicit else kwargs
        self._invokes: list[Invoke] = []
        self._invoke: Invoke | None = None
        #: Proxies derived from an envoy's, once per argument node (see ``LayerEnvoy``).
        self.views: dict[int, InterventionProxy] = {}
        #: Which module calls envoys read, and their proxies (see `ModuleReads`).
        self._reads = ModuleReads(
            self.graph._core, self.graph._nodes, self.graph.proxy_class, ScannedValue, SOURCE_FINDER
        )
        self._source = user_source(2)
        self.graph._session_block = model._session.block
        #: Module calls that do not run (``envoy.skip(value)``).
        self._skips: list[Skip] = []
        #: What ``tracer.cache(...)`` asked for, filled by the run.
        self._caches: list[Cache] = []

    # ----- the block --------------------------------------------------------------------------

    def __enter__(self) -> Tracer:
        session = self.model._session
        if session.tracer is not None:
            raise TracingError(
                f"a trace is already open on this model (at {format_source(session.tracer._source)}"
                "); traces cannot be nested"
            )
        session.tracer = self
        session.reads = self._reads
        if self._implicit is not None:
            try:
                self._open_invoke(*self._implicit)
            except BaseException:  # bad inputs: no block runs, so no __exit__ cleans up
                self.__exit__(TracingError)
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._close_invoke()
        block = self.graph._session_block
        deferred = False
        try:
            if exc_type is None:
                later_in_session = block is not None and bool(block.traces)
                if self.stop_early and self._invokes and not self.graph.has_grads:
                    if not later_in_session:  # (a later trace of a session runs in full)
                        self.stop()  # after all the graph needs (a backward pass needs it all)
                if block is not None:  # it runs when the session ends (see ``session``)
                    block.defer(self)
                    deferred = True
                else:
                    self._run()
        finally:
            self._leave(finish=not deferred)

    def _leave(self, finish: bool) -> None:
        """Ends the block: the model is free for another trace; with ``finish``, what the
        trace held is dropped too (a deferred trace keeps it until it runs)."""
        self.graph.tracing = False
        session = self.model._session
        session.tracer = session.reads = None
        if finish:
            self._finish()

    def _finish(self) -> None:
        """Drops what the trace held for its run (after it, or instead of it)."""
        self.graph.tracing = False
        for invoke in self._invokes:
            if invoke.scan is not None:
                invoke.scan.release()  # read or not, drop the hold on the inputs
        self._reads.clear()
        self._invokes.clear()
        self.views.clear()

    @property
    def generating(self) -> bool:
        """Whether this trace runs ``generate`` (``model.generate(...)``)."""
        return self._generate is not None

    def invoke(self, *inputs: Any, **kwargs: Any) -> Invoker:
        """A block whose interventions apply to these inputs' rows of the batch."""
        return Invoker(self, inputs, kwargs)

    def next(self, steps: int = 1) -> None:
        """Addresses every module's next call from now on (see ``Envoy.next``)."""
        for envoy in self.model._envoy.modules():
            self.advance(envoy, steps)

    @property
    def iter(self) -> StepIndexer:
        """``for step in tracer.iter[0:3]:`` — the loop body's reads and writes address those
        generation steps, one pass of the body per step (modern nnsight's ``tracer.iter``).
        ``iter[1:]`` and ``iter[:]`` need the step count (``max_new_tokens``)."""
        return StepIndexer(self)

    def all(self) -> Iterator[int]:
        """``for step in tracer.all():`` — the loop body addresses every generation step
        (``max_new_tokens`` of them); modern nnsight's ``tracer.all()``."""
        source = user_source()
        check_generating(self, "tracer.all()", source)
        return at_steps(self, list(range(step_count(self, source))))

    def stop(self) -> None:
        """Ends the model's run as soon as everything traced before this call has run (modern
        nnsight's ``tracer.stop()``): later modules do not run, what was saved is kept, and
        ``tracer.output`` is None. In a session, only its first trace can stop."""
        block = self.graph._session_block
        if block is not None and block.traces:
            raise TracingError(
                f"tracer.stop() at {format_source(user_source())} in a session's later trace: "
                "the session's traces run one after another when it ends, and a later one "
                "that stops would leave what it was to compute unset; stop in the first trace, "
                "or run this one outside the session"
            )
        self.graph.add(target=stop_run, args=frontier(self.graph))

    @property
    def result(self) -> Any:
        """What the run returned (modern nnsight's name): after the block, the model's output,
        or ``generate``'s (the ids); inside it, a proxy of that value (``.save()`` it)."""
        if self.graph.tracing:
            generator = getattr(self.model, "_generator_envoy", None)
            if self.generating and generator is not None:
                return generator.output
            return self.model.output
        return self.output

    def apply(self, target: Any, *args: Any, **kwargs: Any) -> InterventionProxy:
        """Traces ``target(*args, **kwargs)`` (any callable, proxies allowed in the args)."""
        return self.graph.add(target=target, args=list(args), kwargs=kwargs)  # type: ignore[return-value]

    # ----- what envoys ask for ----------------------------------------------------------------

    def _open_invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Invoke:
        if self._invoke is not None:
            hint = (
                " (model.trace(inputs) already opens one for its inputs; use model.trace() "
                "with tracer.invoke(...) blocks to batch several)"
                if self._implicit is not None
                else ""
            )
            raise TracingError(f"invokes cannot be nested, at {format_source(user_source())}{hint}")
        args, kwargs, size = self.model._prepare_inputs(args, kwargs)
        start = sum(invoke.size for invoke in self._invokes)
        invoke = Invoke(len(self._invokes), args, kwargs, start, size)
        if self.scan:
            # The invoke's inputs and the forward's keyword arguments, as the scan runs them.
            scan_args, scan_kwargs = self.model._scan_inputs(
                args, {**kwargs, **self._forward_kwargs}
            )
            invoke.scan = ScanContext(self.model._scanner, scan_args, scan_kwargs, self.graph._fake)
        self._invokes.append(invoke)
        self._invoke = invoke
        self._reads.open_invoke(invoke.index, invoke.start, invoke.size, invoke.scan)
        if self.model._edits:  # model.edit(): each invoke starts with the edits
            from .editing import replay

            for edit in self.model._edits:
                replay(self, edit)
        return invoke

    def _close_invoke(self) -> None:
        self._invoke = None
        self._reads.close_invoke()

    def _current_invoke(self, envoy: Envoy, kind: str) -> Invoke:
        if self._invoke is None:
            raise TracingError(
                f"{spell_path(envoy.path)}.{kind} read outside an invoke at "
                f"{format_source(user_source())}: inside model.trace() without inputs, use "
                "it within a `with tracer.invoke(inputs):` block"
            )
        return self._invoke

    def module_value(self, envoy: Envoy, kind: str) -> InterventionProxy:
        """The proxy of ``envoy``'s input or output at its current call, for this invoke
        (``Envoy.output`` asks the core's ``ModuleReads`` directly)."""
        proxy = self._reads.read(envoy, kind)
        if proxy is None:
            self._current_invoke(envoy, kind)  # raises: no invoke is open
        return proxy  # type: ignore[return-value]  # not None: that raised

    def set_module_value(self, envoy: Envoy, kind: str, value: Any, checked: Any = _EMPTY) -> None:
        """Replaces ``envoy``'s input or output at its current call, for this invoke's rows.

        ``checked``: what the batch-size check looks at, when ``value`` is a node made from
        it (a view's replacement, see ``LayerEnvoy``); by default ``value`` itself.
        """
        current = self.module_value(envoy, kind)
        invoke = self._current_invoke(envoy, kind)
        checked = value if checked is _EMPTY else checked
        self._check_rows(envoy, kind, current, checked, invoke)
        if self.graph.validate and kind == "output":
            self._check_shape(envoy, current, checked)
        self.graph.add(target="swap", value=_EMPTY, args=[current.node, value])
        # Later reads in this invoke get a new argument node, set after the swap is applied.
        self._reads.forget(envoy, kind)

    def cache(
        self,
        modules: Any = None,
        include_inputs: bool = False,
        device: torch.device | str | None = "cpu",
        dtype: torch.dtype | None = None,
        detach: bool = True,
    ) -> Cache:
        """The outputs (with ``include_inputs``, also the inputs) of ``modules`` (envoys or
        paths; None: every module) during the run, moved to ``device`` (None: where they
        are), floating ones cast to ``dtype``, detached unless ``detach=False``: modern
        nnsight's ``tracer.cache()``. Read after the block, by path
        (``cache["model.transformer.h.0"].output``) or by navigation
        (``cache.transformer.h[0].output``); a module called several times (generation
        steps) has a list of its calls' values. Values are as the graph's edits left them."""
        paths = module_paths(self.model, modules, user_source())
        cache = Cache(paths, include_inputs, device, dtype, detach)
        self._caches.append(cache)
        return cache

    def skip(self, envoy: Envoy, value: Any) -> None:
        """``envoy``'s module does not run at its current call; ``value`` is its output."""
        source = user_source()
        current = self.module_value(envoy, "output")
        parsed = parse_argument_key(current.node.args[0])
        assert parsed is not None  # an output read's key
        known = value.node._proxy_value if isinstance(value, InterventionProxy) else value
        expected = current.node.proxy_value if isinstance(known, torch.Tensor) else None
        if isinstance(expected, torch.Tensor) and tuple(known.shape) != tuple(expected.shape):
            raise TracingError(
                f"{spell_path(envoy.path)}.skip(...) at {format_source(source)}: the value has "
                f"shape {tuple(known.shape)} where the module gives {tuple(expected.shape)}"
            )
        node = None
        if isinstance(value, InterventionProxy):
            node = value.node.id
            self.graph.add("null", None, [value])  # kept until the module is called
        self._skips.append(Skip(envoy.path, parsed[2], node, value, source))

    def advance(self, envoy: Envoy, steps: int) -> None:
        self._reads.advance(envoy, steps)

    def _check_rows(
        self, envoy: Envoy, kind: str, current: InterventionProxy, value: Any, invoke: Invoke
    ) -> None:
        """Refuses, at the user's line, a replacement whose batch size is known to differ from
        the invoke's rows, when the new value's shape is known (a tensor, or a proxy with a
        concrete proxy value) and the scan says the original is batched."""
        if kind != "output":
            return
        known = value.node._proxy_value if isinstance(value, InterventionProxy) else value
        if not _has_rows(known) or known.shape[0] == invoke.size:
            return
        # Only now is the original's shape worth a (cached) scan: is it batched at all?
        if _has_rows(current.node.proxy_value):
            raise TracingError(
                f"setting {spell_path(envoy.path)}.output at {format_source(user_source())}: "
                f"the new value has batch size {known.shape[0]} but this invoke has "
                f"{invoke.size} row(s); it must match (nnsight 0.2 silently truncated the batch)"
            )

    def _check_shape(self, envoy: Envoy, current: InterventionProxy, value: Any) -> None:
        """With validation on: refuses, at the user's line, a replacement of a module's output
        whose shape differs from the output's (both known), instead of failing inside the next
        module at run time."""
        new = value._known_value() if isinstance(value, InterventionProxy) else value
        old = current._known_value()
        if (
            isinstance(new, torch.Tensor)
            and isinstance(old, torch.Tensor)
            and tuple(new.shape) != tuple(old.shape)
        ):
            raise ValidationError(
                f"setting {spell_path(envoy.path)}.output at {format_source(user_source())}: "
                f"the new value has shape {tuple(new.shape)} where the module gives "
                f"{tuple(old.shape)}"
            )

    # ----- running ----------------------------------------------------------------------------

    def _run(self) -> None:
        self.graph.tracing = False
        if not self._invokes:
            raise TracingError(
                f"the trace at {format_source(self._source)} has no inputs: pass them to "
                "model.trace(...) or open tracer.invoke(...) blocks"
            )
        if self.remote is not None:
            from ..remote.client import run_remotely  # the remote extra, imported when used

            self.output = run_remotely(self)
            return
        if self._skips and len(self._invokes) > 1:
            skip = self._skips[0]
            raise TracingError(
                f"{spell_path(skip.path)}.skip(...) at {format_source(skip.source)}: a skipped "
                "module does not run for the whole batch, and this trace has "
                f"{len(self._invokes)} invokes; skip in a trace of one invoke"
            )
        bar: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.progress and self.generating:
            total = (self._generate or {}).get("max_new_tokens")
            bar = step_bar(self.model._model, total, "generate")
        with bar:
            self.output = run_graph(
                self.model,
                self.graph,
                self._reads,
                self._invokes,
                self._forward_kwargs,
                self._generate,
                self._source,
                self._skips,
                self._caches,
            )


def run_graph(
    model: NNsight,
    graph: InterventionGraph,
    reads: ModuleReads,
    invokes: list[Invoke],
    forward_kwargs: dict[str, Any],
    generate: dict[str, Any] | None,
    source: tuple[str, int],
    skips: list[Skip] | None = None,
    caches: list[Cache] | None = None,
) -> Any:
    """Runs ``graph`` interleaved with one run of ``model`` (a forward pass, or ``generate``
    with those keyword arguments) on the invokes' inputs batched, and returns what the run
    returned. ``reads`` are the module values the graph's argument nodes take; ``source`` is
    the trace's line, for notes on errors; ``skips`` the module calls that do not run;
    ``caches`` what ``tracer.cache`` records.
    Saved proxies become ``SavedProxy``."""
    model._ensure_dispatched()  # a LanguageModel loads its weights on its first run
    args, kwargs = model._batch_inputs([(invoke.args, invoke.kwargs) for invoke in invokes])
    kwargs = {**kwargs, **forward_kwargs}
    total = sum(invoke.size for invoke in invokes)
    rows = [Rows(invoke.start, invoke.size, total) for invoke in invokes]
    # A module whose value nothing live needs gets no hook at all (the interleaver plans
    # from the reads whose nodes are live).
    graph._eliminate_dead_code()
    interleaver = Interleaver(graph, reads, model._modules_by_path, rows)
    module = model._model
    try:
        with interleaver, Skipper(skips or [], model._modules_by_path, graph):
            cache_hooks = HookSet()
            try:
                for cache in caches or ():
                    cache.hook(model._modules_by_path, cache_hooks)
                graph.compile(module)
                # In generation each step calls the modules again: step n is call n.
                output = model._execute(args, kwargs, generate)
                stopped = False
            except EarlyStop:  # a stop node ran (tracer.stop(), stop_early=True)
                output, stopped = None, True
                release_unsaved(graph)
            finally:
                cache_hooks.remove()
        unreached = None if stopped else interleaver.unreached()
        if unreached is not None:
            raise TracingError(unreached)
    except BaseException as exc:
        graph._core.abort()
        if hasattr(exc, "add_note") and not isinstance(exc, TracingError):
            exc.add_note(f"(raised while running the trace at {format_source(source)})")
            # A value put in the model's place is the likely cause of an error after it.
            for what in interleaver.applied[-3:]:
                exc.add_note(f"(the model had gone on after {what})")
        raise
    set_classes(graph.saved, SavedProxy)  # each: object.__setattr__(p, "__class__", ...)
    graph.saved.clear()
    return output


def _has_rows(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and not callable(shape) and len(shape) > 0
