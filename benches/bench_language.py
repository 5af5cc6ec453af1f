"""LanguageModel costs (CPU, one torch thread), each against what it replaces, in the same run:

  * generate:  20 new tokens on the test GPT-2 (``save_language_model``), saving the last
               block's output at every step, vs plain ``generate`` with a forward hook doing
               the same (tokenizing included on both sides).          target <= 1.05x hooks
  * wrap:      ``LanguageModel(dir)`` of a Llama-7B-sized config (weights on meta), in a fresh
               process: seconds and resident MiB added, with the architecture's modeling code
               already imported ("warm") and including that import ("cold"); beside it,
               transformers + accelerate alone doing the same ("plain").
                                                                       target < 1 s, < 100 MiB
  * shapes:    ``.shape`` of a derived proxy (``(h * 2).sum(-1)``): the first question (two
               ops run on fake tensors) and a repeated one; and the fake runs of a trace that
               asks for no shape (target: 0).

Run: ``python benches/bench_language.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_models import report, timed

from nnsight import LanguageModel
from nnsight.models.tiny import save_language_model

STEPS = 20
PROMPT = "the Eiffel Tower is in the city of"


def generate_variants(directory: str) -> dict[str, Callable[[], list[Any]]]:
    """The generation row's two sides (also counted by ``count_instructions.py``)."""
    model = LanguageModel(directory, dispatch=True)
    net = model._model
    tokenizer = model.tokenizer
    greedy = {"max_new_tokens": STEPS, "min_new_tokens": STEPS, "do_sample": False}

    def ours() -> list[Any]:
        with model.generate(PROMPT, **greedy):
            block = model.transformer.h[-1]
            saved = [block.output.save()] + [block.next().output.save() for _ in range(STEPS - 1)]
        return [proxy.value for proxy in saved]

    def hooks() -> list[Any]:
        kept: list[Any] = []
        handle = net.transformer.h[-1].register_forward_hook(lambda m, a, out: kept.append(out))
        try:
            inputs = tokenizer([PROMPT], return_tensors="pt", padding=True)
            net.generate(**inputs, **greedy, pad_token_id=tokenizer.pad_token_id)
        finally:
            handle.remove()
        return kept

    return {"hooks": hooks, "ours": ours}


def bench_generate(directory: str, repeats: int) -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    variants = generate_variants(directory)
    assert all(len(run()) == STEPS for run in variants.values())
    report(f"generate {STEPS}", timed(variants, repeats), "ms", 1e3)


_WRAP = """
import sys, time
import torch, transformers
from nnsight import LanguageModel
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
if sys.argv[2] == "warm":
    import transformers.models.llama.modeling_llama  # the architecture's code, imported
before, start = resident(), time.perf_counter()
if sys.argv[3] == "ours":
    net = LanguageModel(sys.argv[1])._model
else:  # what transformers and accelerate alone do for the same
    import accelerate
    config = transformers.AutoConfig.from_pretrained(sys.argv[1])
    transformers.AutoTokenizer.from_pretrained(sys.argv[1])
    with accelerate.init_empty_weights(include_buffers=True):
        net = transformers.AutoModelForCausalLM.from_config(config)
seconds = time.perf_counter() - start
params = sum(p.numel() for p in net.parameters())
assert {p.device.type for p in net.parameters()} == {"meta"}
print(f"{seconds:.3f} {resident() - before:.1f} {params}")
"""


def bench_wrap() -> None:
    import transformers

    with tempfile.TemporaryDirectory() as directory:
        save_language_model(directory, "llama")  # its tokenizer; the config is replaced:
        transformers.LlamaConfig(vocab_size=32000).save_pretrained(directory)  # 7B's shape
        for kind in ("warm", "cold"):
            shown = []
            for who in ("ours", "plain"):
                out = subprocess.run(
                    [sys.executable, "-c", _WRAP, directory, kind, who],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                ).stdout.split()  # fmt: skip
                seconds, mib, params = float(out[0]), float(out[1]), int(out[2])
                shown.append(f"{who} {seconds:.3f} s, +{mib:.0f} MiB")
            print(
                f"wrap 7B ({kind}):  {';  '.join(shown)} resident "
                f"({params / 1e9:.2f}B parameters on meta)"
            )


def bench_shapes(directory: str, count: int) -> None:
    model = LanguageModel(directory, dispatch=True)
    with torch.no_grad(), model.trace(PROMPT) as tracer:
        hidden = model.transformer.h[-1].mlp.output
        shapes = [hidden.shape]  # the scan: paid once per input signature, not measured
        derived = [(hidden * 2).sum(-1) for _ in range(count)]
        start = time.perf_counter()
        shapes += [proxy.shape for proxy in derived]
        first = (time.perf_counter() - start) / count
        start = time.perf_counter()
        shapes += [proxy.shape for proxy in derived]
        again = (time.perf_counter() - start) / count
        runs = tracer.graph._fake.runs
    assert len(set(shapes[1:])) == 1
    print(
        f"shape on demand: first {first * 1e6:.1f} us, again {again * 1e6:.2f} us per call "
        f"({runs} fake runs for {2 * count} ops: the rest were cache hits)"
    )
    scans = model._scanner.runs
    with torch.no_grad(), model.trace("the cat sat on the mat") as tracer:  # a new signature
        hidden = model.transformer.h[-1].mlp.output
        ((hidden * 2).sum(-1).softmax(-1) + 1).save()
        model.lm_head.output.save()
    print(
        f"a trace asking no shape: {tracer.graph._fake.runs} fake op runs, "
        f"{model._scanner.runs - scans} scans"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    options = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        save_language_model(directory, "gpt2")
        bench_generate(directory, 7 if options.quick else 41)
        bench_shapes(directory, 50 if options.quick else 500)
    bench_wrap()


if __name__ == "__main__":
    main()
