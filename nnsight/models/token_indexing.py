"""Token indexing (``proxy.token[i]``, ``proxy.t[i]``): positions counted from each invoke's own
first token, although the batch is padded on the left (nnsight 0.2's ``TokenIndexer``)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TracingError
from ..intervention.proxy import InterventionProxy


class TokenIndexer:
    """Indexes dimension 1 (tokens) of a proxy by token position within its invoke.

    Invokes of different lengths share one batch padded on the left, so position ``i`` of an
    invoke's prompt is not position ``i`` of the batch. As in nnsight 0.2, a non-negative index
    becomes a negative one from the invoke's own token count (its scanned shape), which is the
    same position in every batch it is padded into; negative indices count from the end as
    usual. Slices with a positive step are converted the same way. Out of range:
    ``IndexError``.
    """

    __slots__ = ("proxy",)

    def __init__(self, proxy: InterventionProxy) -> None:
        self.proxy = proxy

    def _tokens(self) -> int:
        value = self.proxy._known_value()
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            shown = "unknown" if not isinstance(value, torch.Tensor) else f"{value.dim()}-D"
            raise TracingError(
                f"token indexing of proxy '{self.proxy.node.name}' needs a tensor of shape "
                f"(batch, tokens, ...) of known shape; its value is {shown}"
            )
        return int(value.shape[1])

    def convert_idx(self, idx: int | slice) -> int | slice:
        """The batch index of invoke token position ``idx`` (an int or a slice)."""
        tokens = self._tokens()
        if isinstance(idx, slice):
            if idx.step is not None and idx.step <= 0:
                raise IndexError("token slices need a positive step")
            start, stop, step = idx.indices(tokens)
            if stop <= start:
                return slice(0, 0)
            return slice(start - tokens, None if stop == tokens else stop - tokens, step)
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise TypeError(f"token indices must be ints or slices, not {type(idx).__name__}")
        if not -tokens <= idx < tokens:
            raise IndexError(
                f"token index {idx} is out of range: this invoke's input has {tokens} token(s)"
            )
        return idx - tokens if idx >= 0 else idx

    def __getitem__(self, key: int | slice) -> Any:
        return self.proxy[:, self.convert_idx(key)]

    def __setitem__(self, key: int | slice, value: Any) -> None:
        self.proxy[:, self.convert_idx(key)] = value


class LanguageModelProxy(InterventionProxy):
    """The proxies of a :class:`~nnsight.models.LanguageModel.LanguageModel` trace: an
    :class:`InterventionProxy` with token indexing.

    Example::

        with model.trace(["The Eiffel Tower is in", "Paris is"]):
            first = model.lm_head.output.token[0].save()   # each prompt's first real token
    """

    __slots__ = ()

    @property
    def token(self) -> TokenIndexer:
        """Indexes the token dimension by position in the invoke (see :class:`TokenIndexer`)."""
        return TokenIndexer(self)

    @property
    def t(self) -> TokenIndexer:
        """Alias of :attr:`token`."""
        return self.token
