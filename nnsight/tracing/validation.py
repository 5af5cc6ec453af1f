"""Trace-time checking: running a node's target on fake tensors to learn its result's shape.

One ``FakeTensorMode`` is made per graph, the first time it validates, and reused for every node.
Real tensors among the arguments (weights, constants) are fakified by the mode
(``allow_non_fake_inputs``), so validation never reads or writes real data.
"""

from __future__ import annotations

#: Failures that say "fake tensors cannot tell" rather than "this op is wrong": the node is
#: kept, with an unknown proxy value.
import inspect
import logging
import threading
from typing import Any

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    UnsupportedFakeTensorException,
    UnsupportedOperatorException,
)

from . import fake_cache
from ._walk import map_structure

_UNKNOWABLE = (
    DataDependentOutputException,
    DynamicOutputShapeException,
    UnsupportedFakeTensorException,
    UnsupportedOperatorException,
)


_EMPTY = inspect._empty
_active = threading.local()


class _QuietWhileValidating(logging.Filter):
    """Drops the traceback torch logs when a fake op fails, while one of our runs is active:
    the failure is re-raised as a ValidationError naming the user's line, so the log is noise.
    Other code's fake-tensor logging is untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_active, "on", False)


_filter_installed = False


def _install_filter() -> None:
    global _filter_installed
    if not _filter_installed:
        logging.getLogger("torch._subclasses.fake_tensor").addFilter(_QuietWhileValidating())
        _filter_installed = True


class FakeRunner:
    """Runs callables under one lazily made ``FakeTensorMode``, remembering results by
    argument metadata where that is safe (see :mod:`nnsight.tracing.fake_cache`).

    Attributes:
        hits: Calls answered from the cache (for tests and benchmarks).
        runs: Calls actually run on fake tensors (likewise).
    """

    __slots__ = ("_cache", "_mode", "hits", "runs")

    def __init__(self) -> None:
        self._mode: FakeTensorMode | None = None
        self._cache: dict[Any, tuple[Any, ...]] = {}
        self.hits = 0
        self.runs = 0

    @property
    def mode(self) -> FakeTensorMode:
        if self._mode is None:
            _install_filter()
            self._mode = FakeTensorMode(allow_non_fake_inputs=True)
        return self._mode

    def fakify(self, values: Any) -> Any:
        """``values`` with every real tensor replaced by its (memoised) fake twin, so that even
        in-place ops run during validation cannot touch real data."""
        mode = self.mode

        def to_fake(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if isinstance(tensor, FakeTensor) else mode.from_tensor(tensor)

        return map_structure(values, to_fake, torch.Tensor)

    def lookup(self, key: Any) -> Any:
        """The cached result for ``key`` (from :func:`fake_cache.cache_key`), or
        ``inspect._empty`` when there is none."""
        kept = self._cache.get(key) if key is not None else None
        if kept is None:
            return _EMPTY
        self.hits += 1
        return fake_cache.rebuild(kept, self.mode)

    def run(
        self, target: Any, args: list[Any], kwargs: dict[str, Any], key: Any = None
    ) -> tuple[bool, Any]:
        """``(True, result)`` of ``target(*args, **kwargs)`` under the fake mode, or
        ``(False, None)`` when fake tensors cannot know the result (data-dependent shapes).
        Any other exception propagates: it is a real error in the traced code. A result worth
        keeping is cached under ``key``."""
        mode = self.mode
        self.runs += 1
        _active.on = True
        try:
            with mode:
                value = target(*args, **kwargs)
        except _UNKNOWABLE:
            return False, None
        except RuntimeError as err:
            # Ops that need real data (`.item()`, `.tolist()`) raise plain RuntimeErrors that
            # mention data dependence.
            if "data-dependent" in str(err) or "data dependent" in str(err):
                return False, None
            raise
        finally:
            _active.on = False
        if key is not None:
            kept = fake_cache.snapshot(value)
            if kept is not None:
                if len(self._cache) >= fake_cache.MAX_ENTRIES:
                    self._cache.clear()
                self._cache[key] = kept
        return True, value
