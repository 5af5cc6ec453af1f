"""A language model's inputs: what users pass an invoke, as token ids and an attention mask,
and several invokes as one left-padded batch.

Accepted inputs (nnsight 0.2's list): a string; a list of strings; a list of ints (one prompt's
token ids); a list of lists of ints; a 1-D or 2-D tensor of ids; a dict or ``BatchEncoding``
with ``input_ids`` (any of the above) and optionally ``attention_mask`` and ``labels``.
Prompts of different lengths are padded on the left, the mask hiding the pads, so every
prompt's last token sits in the last position, where generation goes on from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..intervention.batching import combine

ACCEPTED = (
    "a string, a list of strings, a list of token ids (ints), a list of lists of token ids, "
    "a 1-D or 2-D tensor of token ids, or a dict / BatchEncoding with 'input_ids' (and "
    "optionally 'attention_mask' and 'labels')"
)

NO_PAD = (
    "prompts of different lengths need padding, but there is no pad token: pass a tokenizer "
    "with one, or set config.pad_token_id"
)

#: What padded label positions hold: the index Hugging Face losses ignore.
IGNORED_LABEL = -100


class Tokens:
    """What one invoke's text became: ids and mask of shape ``(prompts, tokens)``."""

    __slots__ = ("ids", "mask")

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids = ids
        self.mask = mask


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


def left_pad(rows: list[torch.Tensor], pad: int | None, masks: list[torch.Tensor]) -> Tokens:
    """Rows of ids (1-D) and their masks as one left-padded batch (``pad`` fills the ids)."""
    length = max(row.shape[0] for row in rows)
    if any(row.shape[0] != length for row in rows) and pad is None:
        raise ValueError(NO_PAD)
    ids = torch.full((len(rows), length), 0 if pad is None else pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, row_mask) in enumerate(zip(rows, masks, strict=True)):
        if row.shape[0]:
            ids[i, -row.shape[0] :] = row
            mask[i, -row.shape[0] :] = row_mask
    return Tokens(ids, mask)


def tokenize(inputs: Any, tokenizer: Any, pad: int | None, what: str = "input") -> Tokens:
    """``inputs`` (one of :data:`ACCEPTED`, but a dict) as token ids and a mask."""
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and all(isinstance(p, str) for p in inputs)
    ):
        if tokenizer is None:
            raise TypeError(
                f"a text {what} needs a tokenizer, and this LanguageModel has none: pass "
                "LanguageModel(..., tokenizer=...) (token ids work without one)"
            )
        encoded = tokenizer(
            [inputs] if isinstance(inputs, str) else inputs, return_tensors="pt", padding=True
        )
        ids = encoded["input_ids"]
        mask = encoded.get("attention_mask")
        return Tokens(ids, torch.ones_like(ids) if mask is None else mask)
    if _is_ids(inputs) and inputs:
        inputs = [inputs]
    if isinstance(inputs, list) and inputs and all(_is_ids(row) for row in inputs):
        rows = [torch.tensor(row, dtype=torch.long) for row in inputs]
        return left_pad(rows, pad, [torch.ones_like(row) for row in rows])
    if isinstance(inputs, torch.Tensor) and inputs.dim() in (1, 2):
        if inputs.dtype.is_floating_point or inputs.dtype.is_complex:
            raise TypeError(f"token ids must be integers, got a tensor of {inputs.dtype}")
        ids = inputs.unsqueeze(0) if inputs.dim() == 1 else inputs
        return Tokens(ids, torch.ones_like(ids))
    shown = type(inputs).__name__
    if isinstance(inputs, torch.Tensor):
        shown = f"a {inputs.dim()}-D tensor"
    elif isinstance(inputs, list) and not inputs:
        shown = "an empty list"
    raise TypeError(f"a LanguageModel {what} must be {ACCEPTED}; got {shown}")


def prepare(
    args: tuple[Any, ...], kwargs: dict[str, Any], tokenizer: Any, pad: int | None
) -> tuple[tuple[Any, ...], dict[str, Any], int]:
    """One invoke's inputs as the model's keyword arguments (``input_ids``,
    ``attention_mask``, ``labels`` when given, then the other keyword arguments as they are)
    and the number of rows (prompts) they make."""
    kwargs = dict(kwargs)
    if len(args) > 1:
        raise TypeError(
            f"an invoke of a LanguageModel takes one input (the prompts), got {len(args)}; "
            "pass several prompts as a list, or one invoke each"
        )
    if args:
        inputs = args[0]
    elif "input_ids" in kwargs:
        inputs = {key: kwargs.pop(key) for key in ("input_ids", "attention_mask") if key in kwargs}
    else:
        raise TypeError(f"a LanguageModel invoke needs its input: {ACCEPTED}")
    mask = kwargs.pop("attention_mask", None)
    labels = kwargs.pop("labels", None)
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs:
            raise TypeError(f"a dict input needs 'input_ids'; got keys {sorted(inputs)}")
        mask = inputs.get("attention_mask", mask)
        labels = inputs.get("labels", labels)
        inputs = inputs["input_ids"]
    tokens = tokenize(inputs, tokenizer, pad)
    if mask is not None:  # the user's mask, aligned to the right as the ids are
        mask = _as_rows(mask, tokens.ids.shape[0], "attention_mask")
        if mask.shape[1] > tokens.ids.shape[1]:
            raise ValueError(
                f"attention_mask has {mask.shape[1]} positions but the input has "
                f"{tokens.ids.shape[1]} tokens"
            )
        tokens.mask[:, -mask.shape[1] :] = mask
    prepared: dict[str, Any] = {"input_ids": tokens.ids, "attention_mask": tokens.mask}
    if labels is not None:
        if isinstance(labels, torch.Tensor):
            prepared["labels"] = _as_rows(labels, tokens.ids.shape[0], "labels")
        else:
            encoded = tokenize(labels, tokenizer, pad, what="labels")
            prepared["labels"] = encoded.ids.masked_fill(encoded.mask == 0, IGNORED_LABEL)
    prepared.update(kwargs)
    return (), prepared, tokens.ids.shape[0]


def _as_rows(value: Any, rows: int, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    tensor = tensor.unsqueeze(0) if tensor.dim() == 1 else tensor
    if tensor.dim() != 2 or tensor.shape[0] != rows:
        raise ValueError(
            f"{name} must have one row per prompt ({rows}), got shape {tuple(tensor.shape)}"
        )
    return tensor


def batch(
    invokes: list[tuple[tuple[Any, ...], dict[str, Any]]], pad: int | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Prepared invokes as one batch: ids, masks and labels left-padded to the longest
    invoke and concatenated, every other keyword argument combined as for any model."""
    if len(invokes) == 1:
        return invokes[0]
    padded: dict[str, torch.Tensor] = {}
    for key, fill in (("input_ids", pad), ("attention_mask", 0), ("labels", IGNORED_LABEL)):
        parts = [kwargs[key] for _, kwargs in invokes if key in kwargs]
        if not parts:
            continue
        if len(parts) != len(invokes):
            raise ValueError(f"some invokes give '{key}' and others do not: give it in all")
        length = max(part.shape[1] for part in parts)
        if length > min(part.shape[1] for part in parts) and fill is None:
            raise ValueError(NO_PAD)
        padded[key] = torch.cat(
            [_pad_left(part, length, 0 if fill is None else fill) for part in parts]
        )
    rest = [{k: v for k, v in kwargs.items() if k not in padded} for _, kwargs in invokes]
    _, combined = combine([((), kwargs) for kwargs in rest])
    return (), {**padded, **combined}


def _pad_left(part: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    if part.shape[1] == length:
        return part
    pad = torch.full((part.shape[0], length - part.shape[1]), fill, dtype=part.dtype)
    return torch.cat([pad.to(part.device), part], dim=1)
