"""Sharded and offloaded models through accelerate's device maps: every saved value, edits
included, equals the same trace on the unsharded model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from nnsight import LanguageModel  # noqa: E402
from nnsight.models.tiny import save_language_model  # noqa: E402

PROMPT = "The Eiffel Tower is in the city of"
#: Block 1 on the disk, the rest on the CPU (tied embeddings stay together).
DISK_MAP = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.drop": "cpu",
    "transformer.h.0": "cpu",
    "transformer.h.1": "disk",
    "transformer.ln_f": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_language_model(str(tmp_path_factory.mktemp("gpt2")), "gpt2")


def trace(model: LanguageModel) -> dict[str, Any]:
    """A read on one block, an edit on the next computed from it, and the results."""
    with torch.no_grad(), model.trace(PROMPT):
        shape = model.transformer.h[1].output[0].shape  # the scan, offloaded weights and all
        first = model.transformer.h[0].output[0].save()
        model.transformer.h[1].output[0][:, -1] = first[:, -1] * 2  # edit with another's value
        mlp = model.transformer.h[1].mlp.output.save()
        logits = model.lm_head.output.save()
    with model.generate(PROMPT, max_new_tokens=3):
        ids = model.generator.output.save()
    return {"shape": shape, "first": first.value, "mlp": mlp.value, "logits": logits.value,
            "ids": ids.value}  # fmt: skip


def assert_same(ours: dict[str, Any], reference: dict[str, Any], exact: bool = True) -> None:
    assert ours["shape"] == reference["shape"]
    for key in ("first", "mlp", "logits", "ids"):
        a, b = ours[key].cpu(), reference[key]
        assert torch.equal(a, b) if exact else torch.allclose(a, b, atol=1e-4), key


@pytest.fixture(scope="module")
def reference(model_dir: str) -> dict[str, Any]:
    return trace(LanguageModel(model_dir))


def test_auto_map(model_dir: str, reference: dict[str, Any]) -> None:
    model = LanguageModel(model_dir, device_map="auto", dispatch=True)
    assert_same(trace(model), reference)


def test_disk_offload(model_dir: str, reference: dict[str, Any], tmp_path: Any) -> None:
    model = LanguageModel(model_dir, device_map=DISK_MAP, offload_folder=str(tmp_path))
    assert_same(trace(model), reference)
    block = model._model.transformer.h[1]
    assert all(p.device.type == "meta" for p in block.parameters())  # still offloaded
    assert_same(trace(model), reference)  # and the weights still load right from the disk


def test_cpu_offload(model_dir: str, reference: dict[str, Any]) -> None:
    net = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    accelerate.cpu_offload(net, execution_device=torch.device("cpu"))  # weights off the module
    assert all(p.device.type == "meta" for p in net.transformer.h[0].parameters())
    model = LanguageModel(net, tokenizer=LanguageModel(model_dir).tokenizer)
    assert_same(trace(model), reference)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_map_split_over_a_gpu_and_the_cpu(model_dir: str, reference: dict[str, Any]) -> None:
    split = {**DISK_MAP, "transformer.h.1": "cpu", "transformer.h.0": 0, "lm_head": 0,
             "transformer.wte": 0, "transformer.wpe": 0, "transformer.drop": 0}  # fmt: skip
    model = LanguageModel(model_dir, device_map=split, dispatch=True)
    assert model._model.transformer.h[0].attn.c_attn.weight.device.type == "cuda"
    assert model._model.transformer.h[1].attn.c_attn.weight.device.type == "cpu"
    assert_same(trace(model), reference, exact=False)  # saved on cuda, edited on the cpu
