"""``progress=True``: a tqdm bar over a generation's steps or a session's traces (the ``vis``
extra has tqdm)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(
            "progress=True draws with tqdm: pip install '.[vis]' from a checkout of nnsight"
        ) from None
    return tqdm


def trace_bar(total: int) -> Any:
    """A bar over a session's ``total`` traces (the caller updates and closes it)."""
    return _tqdm()(total=total, desc="session", unit="trace")


@contextlib.contextmanager
def step_bar(module: torch.nn.Module, total: int | None, description: str) -> Iterator[None]:
    """Counts ``module``'s forward calls (one per generation step) on a tqdm bar of
    ``total`` steps, for the duration of the block."""
    bar = _tqdm()(total=total, desc=description, unit="step")

    def count(*_: Any) -> None:
        bar.update(1)

    handle = module.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        bar.close()
