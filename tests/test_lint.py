"""The code stays ruff- and mypy-clean (skipped where the tools are not installed)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_ruff() -> None:
    # the ruff installed with this interpreter (a venv not on PATH), else one on PATH
    if importlib.util.find_spec("ruff") is not None:
        cmd = [sys.executable, "-m", "ruff"]
    elif shutil.which("ruff") is not None:
        cmd = ["ruff"]
    else:
        pytest.skip("ruff not installed")
    r = subprocess.run([*cmd, "check", "spoolq", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
