"""Demo: look inside and edit a small GPT-2 built locally (random weights, no downloads).

Run with ``python -m nnsight`` (``--events`` also prints what ran and was freed in one trace).
Each step prints the code it runs and its result, then checks the result against the same
thing done on the same weights in plain ``transformers`` + PyTorch (forward hooks,
``torch.autograd``), and the demo exits non-zero if any differ. The weights are random, so the
tokens are nonsense: what the numbers show is the mechanism.
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import textwrap
from collections.abc import Callable
from typing import Any

import torch

from . import LanguageModel
from .models.tiny import save_language_model

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The famous Colosseum is in the city of"  # as many tokens: no padding
LAYER = 1


class Demo:
    def __init__(self, path: str) -> None:
        import transformers

        self.model = LanguageModel(path)  # config and tokenizer now; weights on first run
        self.plain = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        self.failures: list[str] = []

    def step(self, title: str, run: Callable[[], Any]) -> Any:
        """Prints ``run``'s code, runs it, and returns what it returned."""
        print(f"\n== {title}")
        body = inspect.getsource(run).split("\n", 1)[1]
        print(textwrap.indent(textwrap.dedent(body).rstrip(), "  | "))
        return run()

    def check(self, what: str, ours: torch.Tensor, plain: torch.Tensor) -> None:
        same = ours.shape == plain.shape and torch.allclose(ours, plain, atol=1e-5)
        self.failures.extend([] if same else [what])
        print(f"  {what}: same as plain PyTorch: {same}")

    def top(self, logits: torch.Tensor, k: int = 3) -> str:
        probs = logits.softmax(-1)
        values, ids = probs.topk(k)
        words = self.model.tokenizer.convert_ids_to_tokens(ids.tolist())
        return ", ".join(f"{w!r} {p:.4f}" for w, p in zip(words, values.tolist(), strict=True))

    def hooked(
        self, module: torch.nn.Module, hook: Callable[..., Any], run: Callable[[], Any]
    ) -> Any:
        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return run()
        finally:
            handle.remove()

    def plain_inputs(self, *prompts: str) -> Any:
        return self.model.tokenizer(list(prompts), return_tensors="pt", padding=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m nnsight", description=__doc__)
    parser.add_argument("--events", action="store_true", help="print one trace's event log")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars for a local model
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as path:
        save_language_model(path, "gpt2")
        demo = Demo(path)
        run_steps(demo, options.events)
    if demo.failures:
        raise SystemExit(f"differs from plain PyTorch: {demo.failures}")
    print("\nall results match plain PyTorch")


def run_steps(demo: Demo, events: bool) -> None:
    model, plain = demo.model, demo.plain
    print(
        f"{type(plain).__name__}: {model.config.n_layer} blocks, {model.config.n_embd} wide, "
        f"vocabulary of {model.config.vocab_size} words; weights loaded: {model.dispatched}"
    )

    def read() -> Any:
        with torch.no_grad(), model.trace(CLEAN):
            mlp = model.transformer.h[LAYER].mlp.output.save()
            logits = model.lm_head.output.save()
        print(
            f"  mlp output {tuple(mlp.shape)}; next word after {CLEAN!r}: {demo.top(logits[0, -1])}"
        )
        return mlp, logits

    mlp, logits = demo.step("1. read activations (the weights load now)", read)
    kept: list[torch.Tensor] = []
    expected = demo.hooked(
        plain.transformer.h[LAYER].mlp,
        lambda m, a, out: kept.append(out),
        lambda: plain(**demo.plain_inputs(CLEAN)).logits,
    )
    demo.check("mlp output", mlp.value, kept[0])
    demo.check("logits", logits.value, expected)

    def patch() -> Any:
        with torch.no_grad(), model.trace() as tracer:
            with tracer.invoke(CLEAN):
                clean = model.transformer.h[LAYER].mlp.output
            with tracer.invoke(CORRUPT):  # one batch; this invoke sees its own rows
                before = model.lm_head.output.t[-1].save()
            with tracer.invoke(CORRUPT):
                model.transformer.h[LAYER].mlp.output.t[-1] = clean.t[-1]
                after = model.lm_head.output.t[-1].save()
        moved = (after.softmax(-1) - before.softmax(-1)).abs().sum() / 2
        print(
            f"  next word after {CORRUPT!r}:\n    unpatched {demo.top(before[0])}"
            f"\n    patched   {demo.top(after[0])}\n  the distribution moved by {moved:.3f}"
            " (total variation)"
        )
        return after

    after = demo.step(
        "2. activation patching: the clean last-token MLP into the corrupt run", patch
    )
    clean_kept: list[torch.Tensor] = []
    demo.hooked(
        plain.transformer.h[LAYER].mlp,
        lambda m, a, out: clean_kept.append(out),
        lambda: plain(**demo.plain_inputs(CLEAN)),
    )

    def put_clean(module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, -1] = clean_kept[0][:, -1]
        return out

    patched = demo.hooked(
        plain.transformer.h[LAYER].mlp,
        put_clean,
        lambda: plain(**demo.plain_inputs(CORRUPT)).logits,
    )
    demo.check("patched next-word logits", after.value, patched[:, -1])

    def generate() -> Any:
        forced = model.tokenizer.convert_tokens_to_ids("Paris")
        with model.generate(CORRUPT, max_new_tokens=3, do_sample=False):
            model.lm_head.next().output[:, -1, forced] = 1e4  # step 1 only
            ids = model.generator.output.save()
        print(f"  generated: {model.tokenizer.decode(ids[0])!r}")
        return ids, forced

    ids, forced = demo.step("3. generation with an edit at step 1", generate)
    step = [0]

    def force(module: torch.nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        step[0] += 1
        if step[0] == 2:
            out = out.clone()
            out[:, -1, forced] = 1e4
        return out

    expected_ids = demo.hooked(plain.lm_head, force, lambda: plain.generate(
        **demo.plain_inputs(CORRUPT), max_new_tokens=3, do_sample=False,
        pad_token_id=model.tokenizer.pad_token_id))  # fmt: skip
    demo.check("generated ids", ids.value, expected_ids)

    def gradient() -> Any:
        with model.trace(CLEAN):
            mlp = model.transformer.h[LAYER].mlp.output
            grad = mlp.grad.save()
            model.lm_head.output[0, -1].max().backward()
        print(f"  gradient {tuple(grad.shape)}, norm {grad.norm():.4f}")
        return grad

    grad = demo.step("4. the gradient of the top next-word logit at the MLP output", gradient)
    seen: list[torch.Tensor] = []
    handle = plain.transformer.h[LAYER].mlp.register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        top_logit = plain(**demo.plain_inputs(CLEAN)).logits[0, -1].max()
    finally:
        handle.remove()
    (plain_grad,) = torch.autograd.grad(top_logit, seen[0])
    demo.check("gradient", grad.value, plain_grad)

    if events:
        with torch.no_grad(), model.trace(CLEAN) as tracer:
            tracer.graph.record_events()
            (model.transformer.h[0].mlp.output * 2).save()
        print("\n== the intervention graph of one trace, and what ran and was freed")
        print(textwrap.indent(str(tracer.graph), "  "))
        print("  " + ", ".join(f"{kind} {name}" for kind, name in tracer.graph.take_events()))


if __name__ == "__main__":
    main()
