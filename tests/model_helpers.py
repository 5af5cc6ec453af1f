"""Models built in code for the model tests, and plain-PyTorch oracles (forward hooks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def mlp(width: int = 8, depth: int = 3, seed: int = 0) -> nn.Sequential:
    """Linear/ReLU pairs, then a final Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


class Reuse(nn.Module):
    """Calls one module several times per forward: x -> shared -> act -> shared -> out."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.shared = nn.Linear(width, width)
        self.act = nn.Tanh()
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.out(self.shared(self.act(self.shared(x))) * scale)


@contextmanager
def hooked(module: nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def outputs_of(model: nn.Module, modules: list[nn.Module], *inputs: Any) -> list[list[Any]]:
    """Every output each module gives while ``model(*inputs)`` runs (plain hooks)."""
    seen: list[list[Any]] = [[] for _ in modules]
    handles = [
        m.register_forward_hook(lambda mod, args, out, i=i: seen[i].append(out))
        for i, m in enumerate(modules)
    ]
    try:
        model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def grad_at(
    model: nn.Module, module: nn.Module, inputs: Any, loss: Callable[[Any], torch.Tensor]
) -> Any:
    """``torch.autograd.grad`` of ``loss(model(inputs))`` with respect to ``module``'s
    output (its first tensor when the output is a tuple), for an independent check."""
    seen: list[Any] = []
    handle = module.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        result = loss(model(inputs))
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(result, hidden(seen[0]))
    return grad


def hook_count(model: nn.Module) -> int:
    """Hooks registered anywhere in ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def hidden(output: Any) -> torch.Tensor:
    """A transformer block's hidden states: ``transformers`` 5 returns a tensor, 4.x a tuple."""
    return output[0] if isinstance(output, tuple) else output
