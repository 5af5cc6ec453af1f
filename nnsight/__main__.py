"""Demo: trace and edit a small transformer that ships with the package (no downloads).

Run with ``python -m nnsight``. Each step prints nnsight's result beside the same thing done in
plain PyTorch (forward hooks, ``torch.autograd.grad``) and exits non-zero if they differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import NNsight
from .models.tiny import TinyTransformer


def _hooked(module: torch.nn.Module, fn: Callable[..., Any], call: Callable[[], Any]) -> Any:
    handle = module.register_forward_hook(fn)
    try:
        return call()
    finally:
        handle.remove()


def main() -> None:
    torch.manual_seed(0)
    net = TinyTransformer().eval()
    model = NNsight(net)
    clean = torch.randint(0, net.config.vocab_size, (1, 8))
    corrupt = clean.clone()
    corrupt[0, 2] = (corrupt[0, 2] + 7) % net.config.vocab_size
    failures: list[str] = []
    blocks: list[torch.nn.Module] = list(net.transformer.h)

    def report(what: str, ours: torch.Tensor, plain: torch.Tensor) -> None:
        same = torch.allclose(ours, plain, atol=1e-5)
        failures.extend([] if same else [what])
        head = ", ".join(f"{v:+.4f}" for v in ours.flatten()[:3].tolist())
        print(f"  {what:30s} nnsight [{head}, ...]  plain PyTorch agrees: {same}")

    print(f"model: {type(net).__name__}, {net.config.n_layer} blocks, tokens {clean.tolist()}\n")

    # 1. Save activations.
    print("1. save every block's output")
    with torch.no_grad(), model.trace(clean):
        saved = [block.output.save() for block in model.transformer.h]
    for i, block in enumerate(blocks):
        kept: list[torch.Tensor] = []
        _hooked(block, lambda m, a, out: kept.append(out), lambda: net(clean))  # noqa: B023
        report(f"transformer.h[{i}].output", saved[i].value, kept[0])

    # 2. Activation patching: two invokes batched into one forward pass.
    layer, position = 1, 2
    print(f"\n2. patch h[{layer}] at token {position} from the clean run into the corrupted one")
    with torch.no_grad(), model.trace() as tracer:
        with tracer.invoke(clean):
            clean_hidden = model.transformer.h[layer].output
        with tracer.invoke(corrupt):
            model.transformer.h[layer].output[:, position] = clean_hidden[:, position]
            patched = model.lm_head.output.save()
    with torch.no_grad():
        kept = []
        _hooked(blocks[layer], lambda m, a, out: kept.append(out), lambda: net(clean))

        def patch(module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, position] = kept[0][:, position]
            return out

        plain = _hooked(blocks[layer], patch, lambda: net(corrupt))
    report("patched logits", patched.value, plain)

    # 3. Zero an MLP's output.
    print("\n3. zero transformer.h[2].mlp's output")
    with torch.no_grad(), model.trace(clean):
        model.transformer.h[2].mlp.output[:] = 0
        logits = model.output.save()
    with torch.no_grad():
        plain = _hooked(
            blocks[2].get_submodule("mlp"),
            lambda m, a, out: torch.zeros_like(out),
            lambda: net(clean),
        )
    report("logits with the MLP zeroed", logits.value, plain)

    # 4. Read a gradient.
    print("\n4. gradient of the last token's top logit w.r.t. h[1]'s output")
    with model.trace(clean):
        hidden = model.transformer.h[1].output
        grad = hidden.grad.save()
        model.output[0, -1].max().backward()
    kept = []
    out = _hooked(blocks[1], lambda m, a, o: kept.append(o), lambda: net(clean))
    (plain_grad,) = torch.autograd.grad(out[0, -1].max(), kept[0])
    report("h[1].output.grad", grad.value, plain_grad)

    net.zero_grad()

    # 5. Under the hood: the graph of a small trace, and what ran and was freed when.
    print("\n5. the intervention graph of one trace, and its run")
    with torch.no_grad(), model.trace(clean) as tracer:
        tracer.graph.record_events()
        hidden = model.transformer.h[0].output
        unused = hidden.norm()  # never saved or used: eliminated, never runs
        scaled = (hidden * 2).save()
        model.transformer.h[1].output[:] = scaled
    print("\n".join("  " + line.split("  #")[0] for line in str(tracer.graph).splitlines()))
    events = tracer.graph.take_events()
    print("  run: " + ", ".join(f"{kind} {name}" for kind, name in events))
    ran = {name for kind, name in events if kind == "execute"}
    print(f"  '{unused.node.name}' was eliminated: {unused.node.name not in ran}")
    if unused.node.name in ran:
        failures.append("dead code ran")

    if failures:
        raise SystemExit(f"differs from plain PyTorch: {failures}")
    print("\nall results match plain PyTorch")


if __name__ == "__main__":
    main()
