"""``python -m nnsight`` (what ``make demo`` runs) succeeds, and its checks hold."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def test_the_demo_runs_and_agrees_with_plain_pytorch() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nnsight", "--events"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "all results match plain PyTorch" in out and "same as plain PyTorch: False" not in out
    assert out.count("same as plain PyTorch: True") == 5
    assert "model.trace(CLEAN)" in out  # it shows the code it runs
    assert "execute" in out and "destroy" in out  # --events: the event log
