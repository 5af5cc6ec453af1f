"""LanguageModel: a Hugging Face causal language model, wrapped as in nnsight 0.2.

Needs the ``language`` extra (``pip install '.[language]'`` from a checkout: ``transformers``
and ``accelerate``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..errors import TracingError
from ..intervention.batching import map_tensors
from ..intervention.envoy import Envoy
from ..intervention.proxy import InterventionProxy
from ..util import WrapperModule
from . import language_inputs
from .layer_outputs import LayerEnvoy, is_decoder_layer
from .NNsight import NNsight
from .token_indexing import LanguageModelProxy, TokenIndexer

__all__ = ["LanguageModel", "LanguageModelProxy", "TokenIndexer", "WrapperModule"]

#: Keyword arguments of ``from_pretrained`` that also say where and how to read the config.
_HUB_KWARGS = (
    "revision",
    "cache_dir",
    "token",
    "local_files_only",
    "subfolder",
    "trust_remote_code",
    "force_download",
    "proxies",
)


class _GeneratorEnvoy(Envoy):
    """``model.generator``: its ``.output`` is the ids ``generate`` returned, so it exists
    only in ``model.generate(...)``."""

    def _check(self) -> None:
        tracer = self._session.tracer
        if tracer is not None and not tracer.generating:
            raise TracingError(
                "model.generator.output is what generate() returns: use it inside "
                "`with model.generate(...):`, not model.trace(...)"
            )

    def _get_output(self) -> InterventionProxy:
        self._check()
        return Envoy.output.fget(self)  # type: ignore[attr-defined,no-any-return]

    def _set_output(self, value: Any) -> None:
        self._check()
        Envoy.output.fset(self, value)  # type: ignore[attr-defined]

    output = property(_get_output, _set_output)  # type: ignore[assignment]


class LanguageModel(NNsight):
    """A Hugging Face causal language model for interventions, as nnsight 0.2's.

    ``LanguageModel(model_key, *args, tokenizer=None, automodel=AutoModelForCausalLM,
    dispatch=False, **kwargs)``:

    * ``model_key`` a hub id or a local directory: the config and the tokenizer load at
      once, and the module tree is built with empty weights on ``meta`` (accelerate's
      ``init_empty_weights``), so wrapping takes a fraction of a second at any size and traces
      (and their scans) work before any weight exists. The weights load with
      ``automodel.from_pretrained(model_key, *args, **kwargs)`` (``device_map``,
      ``torch_dtype``/``dtype``...) on the first trace or generate that runs the model, at
      once with ``dispatch=True``, or on :meth:`dispatch_model`. Envoys obtained before then
      keep working. Before the weights load, the scan takes them to be on the CPU.
    * ``model_key`` a ``PreTrainedModel`` (any module with a Hugging Face ``config``): used as
      it is; the tokenizer is ``tokenizer=`` or else loaded from ``config._name_or_path``.
      Without one, text inputs raise (token ids still work).

    The tokenizer pads on the left and, when it has no pad token, pads with its eos token (as
    in 0.2). Inputs: see :mod:`nnsight.models.language_inputs`; invokes of different lengths
    are one left-padded batch whose attention mask hides the pads, each invoke seeing its own
    rows. ``labels=`` are padded with -100 (ignored by the loss; 0.2 padded them with the pad
    token, which the loss then learned). ``model.generate(prompt, max_new_tokens=1,
    **generate_kwargs)`` runs ``generate`` (``max_new_tokens`` defaults to 1, as in 0.2);
    ``model.generator.output`` is the ids it returned. Proxies have ``.token[i]`` / ``.t[i]``
    (:class:`TokenIndexer`).

    ``layer_tuples=True`` (the default) shows every decoder layer's ``.output`` as a tuple
    ``(hidden_states, ...)``, as transformers 4.x returned it and 0.2 code indexes it
    (``model.transformer.h[0].output[0]``), also under transformers 5, whose layers return the
    hidden states alone (where ``output[0]`` would silently be batch row 0). ``False`` shows
    what the installed transformers returns (see :mod:`nnsight.models.layer_outputs`).

    Attributes:
        tokenizer: The tokenizer (None when there is none).
        config: The model's Hugging Face config.
        automodel: The ``transformers`` auto class the weights load with.
    """

    proxy_class: type[InterventionProxy] = LanguageModelProxy
    tokenizer: Any = None
    automodel: Any = None

    def __init__(
        self,
        model_key: str | torch.nn.Module,
        *args: Any,
        tokenizer: Any = None,
        automodel: Any = None,
        dispatch: bool = False,
        tokenizer_kwargs: dict[str, Any] | None = None,
        layer_tuples: bool = True,
        **kwargs: Any,
    ) -> None:
        import transformers  # the `language` extra: imported only by those who use it

        if isinstance(automodel, str):
            automodel = getattr(transformers, automodel)
        self.automodel = automodel or transformers.AutoModelForCausalLM
        self._model_key = model_key
        self._load_args = args
        self._load_kwargs = kwargs
        if isinstance(model_key, torch.nn.Module):
            model = model_key
            self._dispatched = True
            if tokenizer is None:
                tokenizer = _tokenizer_of(model, tokenizer_kwargs)
        elif isinstance(model_key, str):
            try:
                config = kwargs.get("config") or transformers.AutoConfig.from_pretrained(
                    model_key, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
                )
                if tokenizer is None:
                    tokenizer = transformers.AutoTokenizer.from_pretrained(
                        model_key, **{"padding_side": "left", **(tokenizer_kwargs or {})}
                    )
            except OSError as exc:  # the loader's words, with the key they are about
                raise OSError(f"LanguageModel({model_key!r}) could not load it: {exc}") from exc
            model = _empty_model(self.automodel, config, kwargs)
            self._dispatched = False
        else:
            raise TypeError(
                "LanguageModel takes a hub id or a directory (str), or a loaded model "
                f"(torch.nn.Module); got {type(model_key).__name__}"
            )
        self.tokenizer = _left_padding(tokenizer)
        super().__init__(model)
        if layer_tuples:
            for envoy in self._envoy.modules():
                if is_decoder_layer(envoy._module):
                    envoy.__class__ = LayerEnvoy
        self._generator = WrapperModule()
        generator = _GeneratorEnvoy(self._generator, ".generator", self._session)
        self._generator_envoy = generator
        self._envoy._children["generator"] = generator
        self._envoy._by_index.append(generator)
        self._index_modules()
        if dispatch:
            self.dispatch_model()

    # ----- weights ----------------------------------------------------------------------------

    @property
    def dispatched(self) -> bool:
        """Whether the real weights are loaded."""
        return self._dispatched

    def dispatch_model(self, *args: Any, **kwargs: Any) -> None:
        """Loads the real weights now: ``automodel.from_pretrained(model_key, *args,
        **kwargs)`` with the constructor's arguments and these. Does nothing when they are
        loaded already."""
        if self._dispatched:
            return
        load_kwargs = {**self._load_kwargs, **kwargs}
        model = self.automodel.from_pretrained(
            self._model_key, *self._load_args, *args, **load_kwargs
        )
        self._replace_model(model, keep=[self._generator_envoy])
        self._dispatched = True

    def _edited_copy(self) -> LanguageModel:
        """A second wrapper of the same (loaded) module with this one's edits and tokenizer."""
        self._ensure_dispatched()
        copy = LanguageModel(self._model, tokenizer=self.tokenizer, automodel=self.automodel)
        copy._edits.extend(self._edits)
        return copy

    def _ensure_dispatched(self) -> None:
        if not self._dispatched:
            self.dispatch_model()

    @property
    def config(self) -> Any:
        """The model's Hugging Face config."""
        return self._model.config

    # ----- inputs and runs --------------------------------------------------------------------

    def _pad_id(self) -> int | None:
        tokenizer = self.tokenizer
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            return int(tokenizer.pad_token_id)
        config = getattr(self._model, "config", None)
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(config, name, None)
            value = value[0] if isinstance(value, (list, tuple)) and value else value
            if isinstance(value, int):
                return value
        return None

    def _prepare_inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], int]:
        return language_inputs.prepare(args, kwargs, self.tokenizer, self._pad_id())

    def _batch_inputs(
        self, invokes: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return language_inputs.batch(invokes, self._pad_id())

    def _invoker_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """``(BatchEncoding,)`` of the invoke's ids, mask and labels, as in nnsight 0.2."""
        import transformers

        keys = ("input_ids", "attention_mask", "labels")
        return (transformers.BatchEncoding({k: kwargs[k] for k in keys if k in kwargs}),)

    def _to_model_device(self, values: Any) -> Any:
        """``values`` on the device of the model's first parameter that has one (as 0.2, the
        embeddings' with a device map); as they are when every weight is offloaded (on meta:
        accelerate's hooks move inputs to where each module runs)."""
        parameter = next((p for p in self._model.parameters() if not p.is_meta), None)
        if parameter is None:
            return values
        device = parameter.device
        return map_tensors(values, lambda t: t if t.device == device else t.to(device))

    def _scan_inputs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # Before the weights load the scan stands them in on the CPU, with the inputs.
        if not self._dispatched:
            return args, kwargs
        return self._to_model_device((args, kwargs))  # type: ignore[no-any-return]

    def _execute(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], generate: dict[str, Any] | None
    ) -> Any:
        args, kwargs = self._to_model_device((args, kwargs))
        if generate is None:
            return self._model(*args, **kwargs)
        generate = {"max_new_tokens": 1, **generate}
        pad = self._pad_id()
        if pad is not None:
            generate.setdefault("pad_token_id", pad)
        output = self._model.generate(*args, **kwargs, **generate)
        self._generator(output)  # model.generator.output
        return output

    def __repr__(self) -> str:
        tree = repr(self._model)
        return tree[:-1] + "  (generator): WrapperModule()\n)" if tree.endswith(")") else tree


def _empty_model(automodel: Any, config: Any, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The model's module tree with every parameter and buffer on ``meta``, in the dtype the
    weights will load in when it is known."""
    import accelerate  # type: ignore[import-untyped]

    trust = kwargs.get("trust_remote_code", False)
    with accelerate.init_empty_weights(include_buffers=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. generation-config notes about an empty model
        model = automodel.from_config(config, trust_remote_code=trust)
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if dtype == "auto":
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    return model.eval()  # type: ignore[no-any-return]


def _tokenizer_of(model: torch.nn.Module, tokenizer_kwargs: dict[str, Any] | None) -> Any:
    """The tokenizer saved beside a loaded model (``config._name_or_path``), or None."""
    import transformers

    source = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not source:
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(
            source, **{"padding_side": "left", **(tokenizer_kwargs or {})}
        )
    except (OSError, ValueError):
        return None  # none saved there: text inputs say to pass one


def _left_padding(tokenizer: Any) -> Any:
    """``tokenizer`` padding on the left, with its eos token as pad token if it has none."""
    if tokenizer is None:
        return None
    if getattr(tokenizer, "padding_side", "left") != "left":
        warnings.warn(
            "LanguageModel pads prompts on the left (so each one's last token is last); "
            "setting the tokenizer's padding_side to 'left'",
            stacklevel=3,
        )
        tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
