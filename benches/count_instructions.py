"""The close rows of ``bench_models.py``, counted in instructions with callgrind.

On a shared VM the clock cannot settle ratios within a few percent of 1; instruction counts are
deterministic. Each variant runs in its own process under ``valgrind --tool=callgrind`` with
instrumentation off: it builds its model and runs one warm-up trace, then this script switches
instrumentation on (``callgrind_control -i on``) and the process runs ``COUNT`` traces and
exits. The total over ``COUNT`` is the count of one trace.

  * gpt2 / gpt2-hooks: the 12-layer GPT-2-style model saving every block's output.
  * linear / linear-hooks / linear-plain: 32 x (Linear(256, 256) + ReLU) on a 4 x 256 batch,
    saving every layer's output (and reading the saved values).
  * chain / chain-hooks: 1,000 chained ``h * 1.0001`` on a block output.
  * empty: a trace with one save on a one-Linear model.
  * generate / generate-hooks: ``bench_language.py``'s generation row (20 new tokens on the
    test GPT-2, the last block's output saved at every step).

All under ``torch.no_grad()``, one torch thread. Takes ~15 minutes on two cores (two processes
at a time). Run: ``python benches/count_instructions.py [variant ...]``; needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Traces counted per variant family.
COUNT = {"gpt2": 3, "chain": 3, "linear": 20, "empty": 200, "generate": 2}

#: Rows printed: (ours, hooks) variant pairs.
PAIRS = [
    ("gpt2", "gpt2-hooks"),
    ("linear", "linear-hooks"),
    ("chain", "chain-hooks"),
    ("generate", "generate-hooks"),
]

VARIANTS = [
    "gpt2",
    "gpt2-hooks",
    "linear",
    "linear-hooks",
    "linear-plain",
    "chain",
    "chain-hooks",
    "empty",
    "generate",
    "generate-hooks",
]


def build(variant: str) -> Callable[[], Any]:
    """One trace (or hooked / plain forward) of ``variant``, ready to call."""
    import torch

    from nnsight import NNsight
    from nnsight.models.tiny import TinyConfig, TinyTransformer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    family = variant.split("-")[0]
    if family == "generate":
        import tempfile

        from bench_language import generate_variants

        from nnsight.models.tiny import save_language_model

        directory = save_language_model(tempfile.mkdtemp(), "gpt2")
        return generate_variants(directory)["hooks" if variant.endswith("hooks") else "ours"]
    if family in ("gpt2", "chain"):
        config = TinyConfig(vocab_size=1000, n_positions=32, n_embd=256, n_head=4, n_layer=12)
        gpt = TinyTransformer(config).eval()
        tokens = torch.randint(0, 1000, (4, 32))
        model = NNsight(gpt)
        blocks, envoys = list(gpt.transformer.h), list(model.transformer.h)
        if variant == "gpt2":

            def gpt2() -> Any:
                with model.trace(tokens):
                    saved = [envoy.output.save() for envoy in envoys]
                return [proxy.value for proxy in saved]

            return gpt2
        if variant == "gpt2-hooks":
            return lambda: hooked(blocks, lambda: gpt(tokens))

        def ops(h: Any) -> Any:
            for _ in range(1000):
                h = h * 1.0001
            return h

        if variant == "chain":

            def chain() -> Any:
                with model.trace(tokens):
                    saved = ops(envoys[6].output).save()
                return saved.value

            return chain
        return lambda: hooked([blocks[6]], lambda: gpt(tokens), ops)
    if family == "linear":
        stack = torch.nn.Sequential(
            *[layer for _ in range(32) for layer in (torch.nn.Linear(256, 256), torch.nn.ReLU())]
        ).eval()
        x = torch.randn(4, 256)
        relus = [layer for layer in stack if isinstance(layer, torch.nn.ReLU)]
        model = NNsight(stack)
        envoys = [model[i] for i in range(1, 64, 2)]
        if variant == "linear-plain":
            return lambda: stack(x)
        if variant == "linear-hooks":
            return lambda: hooked(relus, lambda: stack(x))

        def linear() -> Any:
            with model.trace(x):
                saved = [envoy.output.save() for envoy in envoys]
            return [proxy.value for proxy in saved]

        return linear
    tiny = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    tiny_in = torch.randn(1, 4)

    def empty() -> Any:
        with tiny.trace(tiny_in):
            saved = tiny[0].output.save()
        return saved.value

    return empty


def hooked(
    modules: list[Any], forward: Callable[[], Any], then: Callable[[Any], Any] = lambda out: out
) -> list[Any]:
    """The hooks version: ``forward()`` with forward hooks keeping ``then(output)`` of each of
    ``modules``."""
    kept: list[Any] = []
    handles = [m.register_forward_hook(lambda mod, a, out: kept.append(then(out))) for m in modules]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return kept


def run_traces(variant: str, count: int, ready: str) -> None:
    """The measured process: builds ``variant`` and warms it up, creates the file ``ready``,
    waits for ``ready + ".go"`` (instrumentation is on by then), runs ``count`` traces, and
    exits without teardown."""
    import torch

    fn = build(variant)
    with torch.no_grad():
        fn()
        open(ready, "w").close()
        while not os.path.exists(ready + ".go"):
            time.sleep(0.05)
        for _ in range(count):
            fn()
    os._exit(0)


def per_trace(variant: str, workdir: str) -> float:
    """Instructions of one trace of ``variant`` (see the module docs)."""
    count = COUNT[variant.split("-")[0]]
    out = os.path.join(workdir, f"{variant}.out")
    ready = os.path.join(workdir, f"{variant}.ready")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--run",
        variant,
        str(count),
        ready,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    ) as run:
        while not os.path.exists(ready):
            if run.poll() is not None:
                raise RuntimeError(f"{variant} exited early: {run.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(run.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        open(ready + ".go", "w").close()
        run.communicate()
    with open(out) as f:
        totals = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if totals is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(totals.group(1)) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", default=VARIANTS, help=", ".join(VARIANTS))
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run:
        run_traces(options.run[0], int(options.run[1]), options.run[2])
    unknown = set(options.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("count_instructions.py needs valgrind (apt install valgrind)")
    with tempfile.TemporaryDirectory() as workdir, ThreadPoolExecutor(2) as pool:
        pending = {v: pool.submit(per_trace, v, workdir) for v in options.variants}
        counts = {variant: future.result() for variant, future in pending.items()}
    print("instructions per trace (callgrind)")
    for variant, count in counts.items():
        print(f"  {variant:13s} {count / 1e6:9.3f} M")
    for ours, hooks in PAIRS:
        if ours in counts and hooks in counts:
            print(f"{ours:6s} ours / hooks {counts[ours] / counts[hooks]:.4f}x")


if __name__ == "__main__":
    main()
