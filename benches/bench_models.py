"""End-to-end cost of tracing real models, each figure a ratio to plain-PyTorch hooks measured
in the same run (CPU, one torch thread). Each repetition times every variant back to back, and
a ratio is the median over repetitions of ours / hooks within one repetition, with its
interquartile range; the ratio of the best times is printed beside it.

  * gpt2:     12-layer GPT-2-style model (n_embd 256, 4 heads, vocab 1000, batch 4 x 32):
              plain forward / forward with hooks storing every block's output / our trace
              saving every block's output.                              target <= 1.03x hooks
  * linear:   32 x (Linear(256, 256) + ReLU), saving every layer's output. target <= 1.08x hooks
  * empty:    fixed cost of a trace with one save on a tiny model, in microseconds.
  * patching: 12 traces, each two invokes (clean, corrupted) patching one layer, vs the same
              with hooks (two forward passes: nnsight batches them into one). target <= 1.03x
  * chain:    one trace applying 1,000 chained cheap ops to a block output vs the same ops run
              eagerly in a hook.                                        target <= 1.05x
  * memory:   200 chained ops on a 32 MiB activation, only the last saved: peak number of
              such activations alive at once (hooks version: 3).

Run: ``python benches/bench_models.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from nnsight import NNsight
from nnsight.models.tiny import TinyConfig, TinyTransformer


class Timings:
    """Per-call times of each variant, one sample per repetition, the samples of one
    repetition taken back to back."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        self.samples = samples

    def best(self, name: str) -> float:
        return min(self.samples[name])

    def ratios(self, name: str, base: str) -> list[float]:
        """``name`` over ``base`` within each repetition, sorted: taken moments apart, the
        two samples share the machine's state, which drifts far more between repetitions."""
        return sorted(a / b for a, b in zip(self.samples[name], self.samples[base], strict=True))

    def ratio(self, name: str, base: str) -> str:
        """Median paired ratio with its interquartile range, and the ratio of the minima."""
        r = self.ratios(name, base)
        q = len(r) // 4
        median = r[len(r) // 2]
        best = self.best(name) / self.best(base)
        return f"{median:.3f}x (IQR {r[q]:.3f}-{r[-1 - q]:.3f}; best-of {best:.3f}x)"


def timed(variants: dict[str, Callable[[], Any]], repeats: int, number: int = 1) -> Timings:
    """Times each variant ``repeats`` times (``number`` calls per sample). Each repetition
    runs every variant once, in an order reversed every other repetition so that neither
    always goes first (a warm cache, a frequency step)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for _ in range(number):
            fn()  # warm up
    order = list(variants.items())
    for repetition in range(repeats):
        for name, fn in order if repetition % 2 == 0 else order[::-1]:
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return Timings(samples)


def collect_hooks(modules: list[torch.nn.Module], run: Callable[[], Any]) -> list[Any]:
    kept: list[Any] = []
    handles = [m.register_forward_hook(lambda mod, args, out: kept.append(out)) for m in modules]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return kept


def bench_save_all(
    net: torch.nn.Module, envoys: Callable[[NNsight], list[Any]], inputs: torch.Tensor,
    modules: list[torch.nn.Module], repeats: int, number: int = 1,
) -> Timings:  # fmt: skip
    model = NNsight(net)
    # Listed once, as the hooks version's `modules` are: the list is the benchmark's setup,
    # not the cost of a trace (filtering 64 envoys by type was 2% of a Linear-stack trace).
    targets = envoys(model)

    def ours() -> list[Any]:
        with model.trace(inputs):
            saved = [envoy.output.save() for envoy in targets]
        return [proxy.value for proxy in saved]

    return timed(
        {
            "plain": lambda: net(inputs),
            "hooks": lambda: collect_hooks(modules, lambda: net(inputs)),
            "ours": ours,
        },
        repeats,
        number,
    )


def bench_patching(net: TinyTransformer, repeats: int) -> Timings:
    model = NNsight(net)
    vocab = net.config.vocab_size
    clean, corrupt = torch.randint(0, vocab, (1, 32)), torch.randint(0, vocab, (1, 32))
    layers = net.transformer.h

    def ours() -> None:
        for layer in range(len(layers)):
            with model.trace() as tracer:
                with tracer.invoke(clean):
                    clean_hidden = model.transformer.h[layer].output
                with tracer.invoke(corrupt):
                    model.transformer.h[layer].output[:, 5] = clean_hidden[:, 5]
                    model.output.save()

    def hooks() -> None:
        for layer in range(len(layers)):
            kept = collect_hooks([layers[layer]], lambda: net(clean))

            def patch(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
                out[:, 5] = kept[0][:, 5]  # noqa: B023

            handle = layers[layer].register_forward_hook(patch)
            try:
                net(corrupt)
            finally:
                handle.remove()

    return timed({"hooks": hooks, "ours": ours}, repeats)


def bench_chain(net: TinyTransformer, inputs: torch.Tensor, repeats: int) -> Timings:
    model = NNsight(net)
    block = net.transformer.h[6]

    def ops(h: Any) -> Any:
        for _ in range(1000):
            h = h * 1.0001
        return h

    def ours() -> None:
        with model.trace(inputs):
            ops(model.transformer.h[6].output).save()

    def hooks() -> None:
        kept: list[Any] = []
        handle = block.register_forward_hook(lambda m, a, out: kept.append(ops(out)))
        try:
            net(inputs)
        finally:
            handle.remove()

    return timed({"hooks": hooks, "ours": ours}, repeats)


class LiveCounter(TorchFunctionMode):
    """Counts tensors of at least ``size`` bytes made by torch functions that are alive at
    once: the peak is the number of such activations held together."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.refs: list[weakref.ref[torch.Tensor]] = []
        self.peak = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.numel() * out.element_size() >= self.size:
            self.refs.append(weakref.ref(out))
            self.peak = max(self.peak, sum(ref() is not None for ref in self.refs))
        return out


def bench_memory() -> dict[str, int]:
    big = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())
    size = 32 * 2**20
    x = torch.zeros(size // 4)
    results = {}

    def chain(h: Any) -> Any:
        for _ in range(200):
            h = h + 1
        return h

    with torch.no_grad():
        counter = LiveCounter(size)
        with counter:
            kept = collect_hooks([big[0]], lambda: big(x))
            last = chain(kept[0])
        del kept
        results["hooks"] = counter.peak
        del last

        model = NNsight(big)
        counter = LiveCounter(size)
        with counter, model.trace(x):
            saved = chain(model[0].output).save()
        results["ours"] = counter.peak
        del saved
    return results


def report(label: str, t: Timings, unit: str, scale: float) -> None:
    times = "  ".join(f"{name} {t.best(name) * scale:7.3f} {unit}" for name in t.samples)
    print(f"{label + ':':15} {times}  -> ours/hooks {t.ratio('ours', 'hooks')}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    options = parser.parse_args()
    # Pairs per row: many short samples pin the median down better than a few long ones.
    repeats = 7 if options.quick else 101
    torch.set_num_threads(1)
    torch.manual_seed(0)

    config = TinyConfig(vocab_size=1000, n_positions=32, n_embd=256, n_head=4, n_layer=12)
    gpt = TinyTransformer(config).eval()
    tokens = torch.randint(0, 1000, (4, 32))
    stack = torch.nn.Sequential(
        *[layer for _ in range(32) for layer in (torch.nn.Linear(256, 256), torch.nn.ReLU())]
    ).eval()
    stack_in = torch.randn(4, 256)
    tiny = torch.nn.Sequential(torch.nn.Linear(4, 4))
    tiny_in = torch.randn(1, 4)
    tiny_model = NNsight(tiny)

    def empty_trace() -> None:
        with tiny_model.trace(tiny_in):
            tiny_model[0].output.save()

    print("ours / hooks: median of the paired ratios (IQR; ratio of the best times)")
    with torch.no_grad():
        t = bench_save_all(
            gpt, lambda m: list(m.transformer.h), tokens, list(gpt.transformer.h), repeats
        )
        report("gpt2 save-all", t, "ms", 1e3)
        linears = [m for m in stack if isinstance(m, torch.nn.ReLU)]
        t = bench_save_all(
            stack, lambda m: [e for e in m if isinstance(e._module, torch.nn.ReLU)], stack_in,
            linears, repeats, number=5,
        )  # fmt: skip
        report("linear x32", t, "ms", 1e3)
        t = timed({"plain": lambda: tiny(tiny_in), "ours": empty_trace}, repeats, number=200)
        fixed = sorted(a - b for a, b in zip(t.samples["ours"], t.samples["plain"], strict=True))
        print(
            f"empty trace:    plain {t.best('plain') * 1e6:7.1f} us  trace with one save "
            f"{t.best('ours') * 1e6:7.1f} us  -> fixed cost {fixed[len(fixed) // 2] * 1e6:.1f} us"
            f" (median of paired differences)"
        )
        report("patching x12", bench_patching(gpt, max(3, repeats // 5)), "ms", 1e3)
        report("1000-op chain", bench_chain(gpt, tokens, repeats), "ms", 1e3)
    m = bench_memory()
    print(f"memory: peak live 32 MiB activations, hooks {m['hooks']}, ours {m['ours']}")


if __name__ == "__main__":
    main()
