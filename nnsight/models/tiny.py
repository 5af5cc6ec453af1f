"""A small GPT-style transformer that ships with the package, for the demo and the benchmarks.

Plain PyTorch, random weights from a seed, no downloads. Its layout follows GPT-2's names
(``transformer.wte``, ``transformer.h[i].attn`` / ``.mlp``, ``lm_head``) so interventions read
the same as on a Hugging Face model, but every block returns a plain tensor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 64
    n_positions: int = 32
    n_embd: int = 32
    n_head: int = 4
    n_layer: int = 4


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        heads = [t.view(batch, tokens, self.n_head, -1).transpose(1, 2) for t in (q, k, v)]
        mixed = nn.functional.scaled_dot_product_attention(
            heads[0], heads[1], heads[2], is_causal=True
        )
        return self.proj(mixed.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block; returns the residual stream (a tensor)."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Body(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class TinyTransformer(nn.Module):
    """``input_ids (batch, tokens) -> logits (batch, tokens, vocab)``."""

    def __init__(self, config: TinyConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = config or TinyConfig()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.transformer = Body(self.config)
            self.lm_head = nn.Linear(self.config.n_embd, self.config.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer(input_ids))


#: The vocabulary of :func:`save_language_model`'s word-level tokenizer.
WORDS = (
    "<eos> <unk> . , the a of in on is was to and it that as at by for from with not The A "
    "Tower "
    "city capital country river tower bridge museum Paris France London England Rome Italy "
    "Berlin Germany Madrid Spain Eiffel Colosseum Thames Seine famous located known old new "
    "big small red blue cat dog sat mat ran house tree when where which who what there "
    "John Mary gave went store park school book ball one two three four five"
).split()


def save_language_model(path: str, architecture: str = "gpt2", seed: int = 0) -> str:
    """Builds a small Hugging Face causal LM with random weights (``"gpt2"`` or ``"llama"``)
    and a word-level tokenizer over :data:`WORDS`, saves both into ``path`` (as
    ``save_pretrained`` does) and returns ``path``: a model directory that
    ``LanguageModel(path)`` and ``transformers`` load like a downloaded one, with no download.
    Needs ``transformers`` and ``tokenizers`` (the ``language`` extra)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate(WORDS)}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=words,
        eos_token="<eos>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],  # as GPT-2's: no token_type_ids
    )
    # Weights 5x the usual scale: sharper next-word distributions, so edits visibly move them.
    common: dict[str, Any] = {
        "vocab_size": len(WORDS),
        "bos_token_id": 0,
        "eos_token_id": 0,
        "initializer_range": 0.1,
    }
    if architecture == "gpt2":
        config: Any = transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, n_positions=64, **common
        )
        build: Any = transformers.GPT2LMHeadModel
    elif architecture == "llama":
        config = transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, **common,
        )  # fmt: skip
        build = transformers.LlamaForCausalLM
    else:
        raise ValueError(f"architecture must be 'gpt2' or 'llama', got {architecture!r}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
