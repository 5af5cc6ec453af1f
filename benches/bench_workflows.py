"""Modern workflows against what a user would write by hand, as ratios measured in the same
run (CPU, one torch thread; the pairing and medians of ``bench_models``):

  * cache:      ``tracer.cache()`` of every module of a 12-layer GPT-2 (n_embd 256, batch
                4 x 32) vs forward hooks appending every module's output to a dict.
                                                                        goal <= 1.0x hooks
  * stop_early: a trace reading only block 0's output, with ``stop_early=True`` vs without
                (the forward pass runs in full) and vs a plain forward.

Run: ``python benches/bench_workflows.py [--quick]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from bench_models import timed

from nnsight import NNsight


def gpt2() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=12, n_embd=256, n_head=4, vocab_size=1000)
    return transformers.GPT2LMHeadModel(config).eval()


def hooks_into_a_dict(net: torch.nn.Module, ids: torch.Tensor) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {}
    handles = []
    for name, module in net.named_modules():
        outputs = seen.setdefault(name, [])
        handles.append(module.register_forward_hook(lambda m, a, o, k=outputs: k.append(o)))
    try:
        with torch.no_grad():
            net(ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    repeats = 5 if parser.parse_args().quick else 21
    torch.set_num_threads(1)
    net = gpt2()
    model = NNsight(net)
    ids = torch.randint(0, 1000, (4, 32))

    def cached() -> Any:
        with torch.no_grad(), model.trace(ids) as tracer:
            cache = tracer.cache()
        return cache

    timings = timed({"hooks": lambda: hooks_into_a_dict(net, ids), "cache": cached}, repeats)
    modules = len(list(net.modules()))
    print(f"cache of {modules} modules: {timings.ratio('cache', 'hooks')} of hooks into a dict")

    def first_block(stop_early: bool) -> Any:
        with torch.no_grad(), model.trace(ids, stop_early=stop_early):
            hidden = model.transformer.h[0].output.save()
        return hidden

    def plain() -> Any:
        with torch.no_grad():
            return net(ids)

    timings = timed(
        {"plain": plain, "full": lambda: first_block(False), "early": lambda: first_block(True)},
        repeats,
    )
    print(
        f"block 0 only: stop_early {timings.ratio('early', 'full')} of the full trace, "
        f"{timings.ratio('early', 'plain')} of a plain forward "
        f"(best {1e3 * timings.best('early'):.2f} ms vs {1e3 * timings.best('full'):.2f} ms)"
    )


if __name__ == "__main__":
    main()
