"""``nnsight.util`` and ``nnsight.CONFIG``: the 0.2 names its tutorials import."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch
from model_helpers import mlp

import nnsight
from nnsight import NNsight, util
from nnsight.tracing.Proxy import Proxy


def test_util_apply_maps_saved_proxies_to_numbers_as_the_ioi_tutorial_does() -> None:
    model = NNsight(mlp())
    results = []
    with model.trace(torch.randn(2, 8)):
        for i in range(3):
            results.append([(model.output[0, 0] * i).save(), {"sum": model.output.sum().save()}])
    numbers = util.apply(results, lambda x: x.value.item(), Proxy)
    assert [row[0] for row in numbers] == pytest.approx([r[0].value.item() for r in results])
    assert all(isinstance(row[1]["sum"], float) for row in numbers)
    nested = [1, (2, [3]), {"a": 4}, slice(5, 6)]
    assert util.apply(nested, lambda x: x * 10, int) == [10, (20, [30]), {"a": 40}, slice(50, 60)]
    assert util.apply(nested, lambda x: -x, int, inplace=True) is nested and nested[0] == -1
    assert util.fetch_attr(model._model, "0.weight") is model._model[0].weight
    assert util.fetch_attr(model._model, "") is model._model


def test_config_is_saved_in_the_user_config_directory_not_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NNSIGHT_CONFIG_DIR", str(tmp_path / "cfg"))
    package = Path(nnsight.__file__).parent
    before = sorted(p.name for p in package.iterdir())
    config = importlib.reload(importlib.import_module("nnsight.config")).CONFIG
    assert config.API.APIKEY is None and config.API.HOST == "ndif.dev"
    config.set_default_api_key("secret-key")
    saved = json.loads((tmp_path / "cfg" / "config.json").read_text())
    assert saved["API"]["APIKEY"] == "secret-key"
    assert sorted(p.name for p in package.iterdir()) == before  # nothing written there
    reloaded = importlib.reload(importlib.import_module("nnsight.config")).CONFIG
    assert reloaded.API.APIKEY == "secret-key" and reloaded.model_dump() == saved
    (tmp_path / "cfg" / "config.json").write_text("{not json")
    assert importlib.reload(importlib.import_module("nnsight.config")).CONFIG.API.APIKEY is None
    monkeypatch.delenv("NNSIGHT_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert nnsight.config.config_path() == tmp_path / "xdg" / "nnsight" / "config.json"
    assert os.path.isabs(nnsight.config.config_path())


def test_config_is_importable_as_in_02() -> None:
    from nnsight import CONFIG

    assert hasattr(CONFIG, "set_default_api_key") and hasattr(CONFIG.APP, "LOGGING")
