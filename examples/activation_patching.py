"""Activation patching: run a corrupted prompt with one layer's hidden state at the last
position taken from the clean prompt, layer by layer, and plot how much of the clean answer's
logit that brings back (matplotlib).

Runs on a small GPT-2 built locally (random weights, no download): the effect sizes are
those of random weights; the picture shows the method.
``python examples/activation_patching.py [out.png]``.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from nnsight import LanguageModel
from nnsight.models.tiny import save_language_model

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The famous Colosseum is in the city of"  # as many tokens: no padding
ANSWERS = ("Paris", "Rome")


def answer_logit_difference(logits: torch.Tensor, ids: tuple[int, int]) -> torch.Tensor:
    """Logit of the clean answer minus the corrupted one's, at the last position."""
    return logits[:, -1, ids[0]] - logits[:, -1, ids[1]]


def patching_effects(model: LanguageModel) -> tuple[torch.Tensor, float, float]:
    """Per layer: the logit difference of the corrupted run with that layer's last-position
    hidden state patched in from the clean run; and the clean and corrupted differences."""
    ids = tuple(model.tokenizer(word)["input_ids"][0] for word in ANSWERS)
    with model.trace(CLEAN):
        clean_logits = model.lm_head.output.save()
    with model.trace(CORRUPT):
        corrupt_logits = model.lm_head.output.save()
    effects = []
    for layer in model.transformer.h:
        with model.trace() as tracer:
            with tracer.invoke(CLEAN):
                clean_hidden = layer.output[0][:, -1, :]
            with tracer.invoke(CORRUPT):
                layer.output[0][:, -1, :] = clean_hidden  # the clean state, in the other run
                patched = model.lm_head.output.save()
        effects.append(answer_logit_difference(patched.value, ids).item())
    clean = answer_logit_difference(clean_logits.value, ids).item()
    corrupt = answer_logit_difference(corrupt_logits.value, ids).item()
    return torch.tensor(effects), clean, corrupt


def plot(effects: torch.Tensor, clean: float, corrupt: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.bar(range(len(effects)), effects.numpy(), color="tab:blue", label="patched")
    axes.axhline(clean, color="tab:green", linestyle="--", label="clean run")
    axes.axhline(corrupt, color="tab:red", linestyle=":", label="corrupted run")
    axes.set_xticks(range(len(effects)), [f"layer {i}" for i in range(len(effects))])
    axes.set_ylabel(f"logit({ANSWERS[0]}) - logit({ANSWERS[1]})")
    axes.set_title("activation patching, last position")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(path: str = "activation_patching.png") -> tuple[torch.Tensor, float, float]:
    with tempfile.TemporaryDirectory() as directory:
        model = LanguageModel(save_language_model(directory), dispatch=True)
        effects, clean, corrupt = patching_effects(model)
        plot(effects, clean, corrupt, path)
    print(f"wrote {path}")
    return effects, clean, corrupt


if __name__ == "__main__":
    main(*sys.argv[1:2])
