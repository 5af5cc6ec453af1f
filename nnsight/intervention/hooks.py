"""Registering and removing forward hooks for one run, cheaply.

``register_forward_hook`` builds a ``RemovableHandle`` with weak references per hook, which
costs ~10 µs: on a trace that hooks 32 modules that is a third of the per-trace overhead. This
writes the hook into the module's hook dictionaries directly, with ids from torch's own
counter, exactly as ``register_forward_hook`` / ``register_forward_pre_hook(with_kwargs=True)``
do, and removes them in one sweep. A module without those dictionaries (a future torch) falls
back to the public API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


class HookSet:
    """Hooks added for one run; :meth:`remove` takes every one of them out again."""

    __slots__ = ("_entries", "_handles", "_ids")

    def __init__(self) -> None:
        self._entries: list[tuple[dict[int, Any], int]] = []  # (hook table, hook id)
        self._handles: list[RemovableHandle] = []
        self._ids: Iterator[int] = iter(())

    def reserve(self, count: int) -> None:
        """Takes ``count`` hook ids from torch's counter at once (ids this set's next hooks
        use), so adding each hook does not write the counter, a class attribute, again."""
        first = RemovableHandle.next_id
        RemovableHandle.next_id = first + count
        self._ids = iter(range(first, first + count))

    def forward(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        hooks = getattr(module, "_forward_hooks", None)
        if not isinstance(hooks, dict):
            self._handles.append(module.register_forward_hook(hook))
            return
        hook_id = self.next_id()
        hooks[hook_id] = hook
        self._entries.append((hooks, hook_id))

    def forward_with_kwargs(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        """A forward hook called as ``hook(module, args, kwargs, output)`` (public API)."""
        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def forward_pre(self, module: torch.nn.Module, hook: Callable[..., Any]) -> None:
        """A pre-hook called as ``hook(module, args, kwargs)``."""
        hooks = getattr(module, "_forward_pre_hooks", None)
        with_kwargs = getattr(module, "_forward_pre_hooks_with_kwargs", None)
        if not isinstance(hooks, dict) or not isinstance(with_kwargs, dict):
            self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            return
        hook_id = self.next_id()
        hooks[hook_id] = hook
        with_kwargs[hook_id] = True
        self._entries.append((hooks, hook_id))
        self._entries.append((with_kwargs, hook_id))

    def next_id(self) -> int:
        """A hook id: a reserved one while any are left, else the next of torch's counter."""
        hook_id = next(self._ids, None)
        if hook_id is None:  # none reserved (left)
            hook_id = RemovableHandle.next_id
            RemovableHandle.next_id += 1
        return hook_id

    def remove(self) -> None:
        for table, hook_id in self._entries:
            table.pop(hook_id, None)
        self._entries.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
