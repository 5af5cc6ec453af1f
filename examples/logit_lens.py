"""The logit lens: decode every layer's hidden state with the model's own final norm and
unembedding, and plot the top token per layer and position as a heatmap (matplotlib).

Runs on a small GPT-2 built locally (random weights, no download), so the tokens are
nonsense: the picture shows the method. ``python examples/logit_lens.py [out.png]``.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from nnsight import LanguageModel
from nnsight.models.tiny import save_language_model

PROMPT = "The Eiffel Tower is in the city of"


def logit_lens(model: LanguageModel, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer and position: the probability of the top token and its id, each
    ``(layers, positions)``."""
    layers = model.transformer.h
    with model.trace(prompt):
        probabilities = []
        for layer in layers:
            hidden = layer.output[0]  # a block's hidden state, as in nnsight 0.2
            logits = model.lm_head(model.transformer.ln_f(hidden))
            probabilities.append(logits.softmax(dim=-1)[0].save())
    stacked = torch.stack([p.value for p in probabilities])  # (layers, positions, vocab)
    top, ids = stacked.max(dim=-1)
    return top.detach(), ids


def plot(
    model: LanguageModel, prompt: str, top: torch.Tensor, ids: torch.Tensor, path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    tokens = [model.tokenizer.decode(t) for t in model.tokenizer(prompt)["input_ids"]]
    figure, axes = plt.subplots(figsize=(1.1 * len(tokens) + 2, 0.8 * len(top) + 1.5))
    image = axes.imshow(top.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for layer in range(ids.shape[0]):
        for position in range(ids.shape[1]):
            word = model.tokenizer.decode(ids[layer, position])
            axes.text(position, layer, word, ha="center", va="center", color="w", fontsize=8)
    axes.set_xticks(range(len(tokens)), tokens, rotation=45, ha="right")
    axes.set_yticks(range(len(top)), [f"layer {i}" for i in range(len(top))])
    axes.set_title("logit lens: top token per layer and position")
    figure.colorbar(image, label="probability")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(path: str = "logit_lens.png") -> tuple[torch.Tensor, torch.Tensor]:
    with tempfile.TemporaryDirectory() as directory:
        model = LanguageModel(save_language_model(directory), dispatch=True)
        top, ids = logit_lens(model, PROMPT)
        plot(model, PROMPT, top, ids, path)
    print(f"wrote {path}")
    return top, ids


if __name__ == "__main__":
    main(*sys.argv[1:2])
