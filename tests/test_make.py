"""The Makefile checks its prerequisites first and says what to install (issue 18: without
cargo, ``make test`` used to end in ``make: cargo: No such file or directory``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_missing_cargo_is_named_with_what_to_install(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # python3 and make, nothing else
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "make").symlink_to(shutil.which("make"))  # type: ignore[arg-type]
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", str(tmp_path))}
    for target in ("tools", "test", "demo"):
        done = subprocess.run(
            ["make", "-s", "-C", str(ROOT), target, "VENV=" + str(tmp_path / "venv")],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        assert "cargo is missing: install Rust 1.95 or later" in done.stdout + done.stderr
        assert not (tmp_path / "venv").exists()  # checked before anything was installed


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_the_tools_check_passes_here() -> None:
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "test-tools"], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
