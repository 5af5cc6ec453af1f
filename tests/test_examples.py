"""The example scripts run end to end (they write their plots), and their numbers equal the
same computation done on the same weights with plain transformers and forward hooks."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")
import transformers

from nnsight import LanguageModel
from nnsight.models.tiny import save_language_model

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
PNG = b"\x89PNG\r\n\x1a\n"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_language_model(str(tmp_path_factory.mktemp("gpt2")))


def block_hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def test_logit_lens_writes_its_plot_and_equals_hooks(directory: str, tmp_path: Any) -> None:
    lens = example("logit_lens")
    path = os.path.join(tmp_path, "lens.png")
    lens.main(path)
    with open(path, "rb") as file:
        assert file.read(8) == PNG
    top, ids = lens.logit_lens(LanguageModel(directory, dispatch=True), lens.PROMPT)
    net = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    tokens = LanguageModel(directory).tokenizer(lens.PROMPT, return_tensors="pt")
    hidden: list[torch.Tensor] = []
    handles = [
        b.register_forward_hook(lambda m, a, o: hidden.append(block_hidden(o)))
        for b in net.transformer.h
    ]
    with torch.no_grad():
        net(**tokens)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        probabilities = torch.stack(
            [net.lm_head(net.transformer.ln_f(h)).softmax(-1)[0] for h in hidden]
        )
    expected_top, expected_ids = probabilities.max(dim=-1)
    assert torch.equal(ids, expected_ids) and torch.allclose(top, expected_top)


def patched_logits(net: Any, block: Any, clean: Any, corrupt: Any) -> torch.Tensor:
    """The corrupted run's logits with ``block``'s last-position hidden state from the clean
    run, by forward hooks."""
    kept: list[torch.Tensor] = []
    handle = block.register_forward_hook(lambda m, a, o: kept.append(block_hidden(o)[:, -1]))
    net(**clean)
    handle.remove()

    def patch(module: Any, args: Any, output: Any) -> Any:
        block_hidden(output)[:, -1] = kept[0]
        return output

    handle = block.register_forward_hook(patch)
    try:
        return net(**corrupt).logits  # type: ignore[no-any-return]
    finally:
        handle.remove()


def test_activation_patching_writes_its_plot_and_equals_hooks(
    directory: str, tmp_path: Any
) -> None:
    patching = example("activation_patching")
    path = os.path.join(tmp_path, "patching.png")
    patching.main(path)
    with open(path, "rb") as file:
        assert file.read(8) == PNG
    effects, clean, corrupt = patching.patching_effects(LanguageModel(directory, dispatch=True))
    net = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = LanguageModel(directory).tokenizer
    ids = [tokenizer(word)["input_ids"][0] for word in patching.ANSWERS]

    def difference(logits: torch.Tensor) -> float:
        return (logits[0, -1, ids[0]] - logits[0, -1, ids[1]]).item()

    clean_tokens = tokenizer(patching.CLEAN, return_tensors="pt")
    corrupt_tokens = tokenizer(patching.CORRUPT, return_tensors="pt")
    with torch.no_grad():
        assert difference(net(**clean_tokens).logits) == pytest.approx(clean, abs=1e-5)
        assert difference(net(**corrupt_tokens).logits) == pytest.approx(corrupt, abs=1e-5)
        for layer, block in enumerate(net.transformer.h):
            patched = patched_logits(net, block, clean_tokens, corrupt_tokens)
            assert effects[layer].item() == pytest.approx(difference(patched), abs=1e-5)
    assert effects[-1].item() == pytest.approx(clean, abs=1e-5)  # the last layer decides
